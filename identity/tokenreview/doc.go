// Package tokenreview verifies Kubernetes service-account tokens with the
// API server's TokenReview, as istiod verifies istio-agent's: the token
// must be valid for one of the audiences (istio-ca by default), and the
// user it names, system:serviceaccount:<namespace>:<name>, is the
// client's identity.
package tokenreview
