// Package tokenreview verifies Kubernetes service-account tokens with the
// API server's TokenReview, as istiod verifies istio-agent's: the token
// must be valid for one of the audiences (istio-ca by default), and the
// user it names, system:serviceaccount:<namespace>:<name>, is the
// client's identity.
//
// A Reviewer asks about a token once and keeps the answer, as the
// Kubernetes API server's own token cache does: a verified token until
// its exp claim (read once the review verified it), at most SuccessTTL; a
// refused one for FailureTTL; under a keyed hash of the token and the
// audiences, never the token; in LRUs bounded in entries, apart for the
// refused so junk never pushes a verified token out. Concurrent Verify
// calls of one token share one review. Reviews go through a client of
// their own, whose rate (100/s, bursts of 1,000) a failover of a
// replica's proxies fits in, and each client host may cause only so many
// (10/s, bursts of 100): past it a token not cached is refused as
// token_review_throttled, so one source of junk tokens cannot starve the
// others.
package tokenreview
