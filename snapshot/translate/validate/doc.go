// Package validate rejects Istio objects that istiod would reject, with the
// rules of istiod's pkg/config/validation, before xdshard serves them:
// istiod never NACKs its config source, it logs and drops a bad object, so
// xdshard must catch it first and show why in the tenant's diagnostics.
//
// Covered: VirtualService, DestinationRule, ServiceEntry, Sidecar,
// PeerAuthentication and AuthorizationPolicy, for the rules that decide
// whether istiod accepts an object (not every warning istioctl analyze
// gives). Never imports the server.
package validate
