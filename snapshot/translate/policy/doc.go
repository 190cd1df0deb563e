// Package policy generates each tenant's isolation policies, so a platform
// team runs many tenants on a shared istiod without writing them by hand:
// in every namespace of the tenant a PeerAuthentication "default" (mTLS
// STRICT), an AuthorizationPolicy allowing only the tenant's own
// namespaces, istio-system and the tenants it trusts, a Sidecar "default"
// limiting egress to what the tenant may reach, and a Kubernetes
// NetworkPolicy with the same intent at L3/L4.
//
// Generated objects carry the label GeneratedLabel. A user's own object of
// the same kind, namespace and name wins, and the conflict is reported. It
// never imports the server.
package policy
