package snapshot

import "strings"

// MCPKey is the version-independent key under which an MCP type is kept in
// ViewMCP: "networking.istio.io/v1/VirtualService" and
// "networking.istio.io/v1alpha3/VirtualService" both map to
// "networking.istio.io/VirtualService", since istiods of different ages ask
// for different versions of the same kind. A type URL that is not of the
// group/version/Kind shape is returned unchanged.
func MCPKey(typeURL string) string {
	parts := strings.Split(typeURL, "/")
	if len(parts) != 3 {
		return typeURL
	}
	return parts[0] + "/" + parts[2]
}

// ViewKube holds what xdshard writes to Kubernetes for a tenant: its
// generated NetworkPolicies, under NetworkPolicyKey, each a Resource named
// "namespace/name" whose body is the object's JSON (type URL
// NetworkPolicyKey).
const ViewKube View = "kube"

// NetworkPolicyKey is the key and type URL of generated NetworkPolicies in
// ViewKube.
const NetworkPolicyKey = "networking.k8s.io/v1/NetworkPolicy"

// ViewMCPByRevision holds ViewMCP again, partitioned by the value of each
// object's own istio.io/rev label ("" for objects without one), under
// MCPPartitionKey, so serving an istiod of a revision picks partitions and
// never looks inside a resource.
const ViewMCPByRevision View = "mcp-revision"

// MCPPartitionKey is the key in ViewMCPByRevision of typeURL's objects
// labelled istio.io/rev=revision ("" for unlabelled objects).
func MCPPartitionKey(typeURL, revision string) string {
	return MCPKey(typeURL) + "@" + revision
}

// MCPSets returns the sets of typeURL that an istiod of revision keeps, by
// Istio's rule (istio.io/istio pkg/config/model.go, LabelsInRevision, which
// istiod's Kubernetes config store and its MCP client both apply): an
// istiod without a revision keeps every object; one of revision R keeps
// the objects without an istio.io/rev label and those labelled R. A
// namespace's label plays no part, and revision tags are no revisions
// (istiod's config stores do not resolve them). Empty sets are left out.
// Safe on a nil Snapshot.
func (s *Snapshot) MCPSets(typeURL, revision string) []*Set {
	if s == nil {
		return nil
	}
	var out []*Set
	if revision == "" {
		if set := s.Set(ViewMCP, typeURL); set.Len() > 0 {
			out = append(out, set)
		}
		return out
	}
	for _, part := range []string{"", revision} {
		if set := s.Views[ViewMCPByRevision][MCPPartitionKey(typeURL, part)]; set.Len() > 0 {
			out = append(out, set)
		}
	}
	return out
}
