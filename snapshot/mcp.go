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

// ViewMCPByRevision holds ViewMCP again, partitioned by the istiod
// revision each object goes to, under MCPPartitionKey. Translation decides
// the partition of every object (its namespace's istio.io/rev, or
// AllRevisions for mesh-wide config), so serving never parses a resource
// name to find its namespace.
const ViewMCPByRevision View = "mcp-revision"

// AllRevisions is the partition every istiod receives, whatever its
// revision: the Istio root namespace's config.
const AllRevisions = "*"

// MCPPartitionKey is the key in ViewMCPByRevision of typeURL's objects that
// go to istiods of revision ("" for namespaces without a revision label).
func MCPPartitionKey(typeURL, revision string) string {
	return MCPKey(typeURL) + "@" + revision
}

// MCPSets returns the sets of typeURL that an istiod of revision receives
// from this snapshot: the whole type for an istiod without a revision;
// otherwise its revision's partition and the AllRevisions one. Empty sets
// are left out. Safe on a nil Snapshot.
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
	parts := []string{AllRevisions}
	if revision != AllRevisions {
		parts = append(parts, revision)
	}
	for _, part := range parts {
		if set := s.Views[ViewMCPByRevision][MCPPartitionKey(typeURL, part)]; set.Len() > 0 {
			out = append(out, set)
		}
	}
	return out
}
