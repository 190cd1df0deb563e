// Package identity says who a client is, by what it proves rather than
// what it claims: the SPIFFE URI of a verified client certificate
// (spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>), or a
// Kubernetes service-account token verified by a TokenVerifier (the
// TokenReview one lives in identity/tokenreview, so this package carries
// no Kubernetes types). It also keeps a server's certificate, key and
// client CA reloaded from their files as cert-manager and istio-agent
// rotate them, and verifies client certificates itself so each refusal
// has its own reason.
package identity
