package snapshot

import (
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/cespare/xxhash/v2"
)

// Type URLs of the resources a Snapshot carries.
const (
	ClusterType   = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	EndpointType  = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
	ListenerType  = "type.googleapis.com/envoy.config.listener.v3.Listener"
	RouteType     = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
	NameTableType = "type.googleapis.com/istio.networking.nds.v1.NameTable"
)

// View is the shape of a tenant's config for one kind of client. The same
// tenant is served to Envoy sidecars, proxyless gRPC clients, istiod (MCP)
// and istio-agent (NDS) from different views of one snapshot.
type View string

const (
	ViewEnvoy View = "envoy" // CDS/EDS/LDS/RDS for Envoy sidecars
	ViewGRPC  View = "grpc"  // CDS/EDS/LDS/RDS for proxyless gRPC (GENERATOR: grpc)
	ViewMCP   View = "mcp"   // Istio config for istiod, keyed by MCPKey
	ViewNDS   View = "nds"   // the DNS name table for istio-agent
)

// Snapshot is one tenant's complete, immutable, versioned config. Never
// modify a Snapshot after it has been published to a Store.
type Snapshot struct {
	Tenant      string
	Version     string // content hash over every view and the namespaces; identical config -> identical version
	Views       map[View]map[string]*Set
	Diagnostics []Diagnostic
	Built       time.Time
	// Namespaces are the tenant's namespaces this snapshot was built for,
	// sorted. A namespace that leaves the tenant changes the version, so
	// the streams bound through it learn that it moved.
	Namespaces []string
	// Rollout is the tenant's own canary rollout setting (its Namespaces'
	// annotations); not part of Version, since it changes how a version
	// is rolled out, not what is served.
	Rollout RolloutPolicy
	// Pinned says the snapshot is served as a rollback holds it (its
	// owner's operator pinned it): not part of Version, and carried to the
	// replicas that fetch it, so they and any later owner hold it too.
	Pinned bool
	// Candidate, on the copy the peer exchange sends of the stable
	// version, is the version its owner rolls out to canaries now ("" for
	// none): a replica that fetches the tenant then fetches that candidate
	// too, on a stream of its own, and serves it to its own canaries. Not
	// part of Version.
	Candidate string
	// Held and HeldWhy, on the same copy, are the last candidate its
	// owner took back and why: a replica that comes to own the tenant does
	// not roll it out again.
	Held, HeldWhy string
	// Breadth is how many tenants the change that made this version had
	// built together (0: not known): a push of a narrow change is sent
	// before pushes of a broad one (see xds.Server). Not part of Version.
	Breadth int

	peer *peerCache // the snapshot as the peer exchange sends it, made once
}

// RolloutMode says whether a tenant's new versions are canaried.
type RolloutMode string

const (
	RolloutInherit RolloutMode = ""       // the replica's setting (serve --rollout)
	RolloutCanary  RolloutMode = "canary" // canaried, whatever the replica's setting
	RolloutOff     RolloutMode = "off"    // served to every proxy at once
)

// RolloutPolicy is a tenant's own canary rollout setting; zero fields
// take the replica's.
type RolloutPolicy struct {
	Mode RolloutMode
	// Percent of the tenant's proxies are canaries, by node ID hash.
	Percent int
	// Selector, a Kubernetes label selector over the proxies' labels
	// (node metadata LABELS), picks the canaries instead of the hash.
	Selector string
}

// WithNamespaces returns a copy of s built for the tenant's namespaces
// (sorted), with a version that covers them.
func (s *Snapshot) WithNamespaces(namespaces []string) *Snapshot {
	cp := *s
	cp.Namespaces, cp.peer = namespaces, &peerCache{}
	h := xxhash.New()
	_, _ = h.WriteString(s.Version)
	for _, ns := range namespaces {
		_, _ = h.WriteString("\x00" + ns)
	}
	cp.Version = fmt.Sprintf("%016x", h.Sum64())
	return &cp
}

// Serves reports whether namespace is one of the tenant's namespaces in
// this snapshot. Safe on a nil Snapshot.
func (s *Snapshot) Serves(namespace string) bool {
	if s == nil {
		return false
	}
	_, ok := slices.BinarySearch(s.Namespaces, namespace)
	return ok
}

// New assembles a snapshot from its views and computes its version.
// Diagnostics do not change the version: they describe the input, and a
// change to a warning alone must not push config to every proxy.
func New(tenant string, views map[View]map[string]*Set, diags []Diagnostic) *Snapshot {
	if views == nil {
		views = map[View]map[string]*Set{}
	}
	return &Snapshot{
		Tenant:      tenant,
		Version:     versionOf(views),
		Views:       views,
		Diagnostics: diags,
		Built:       time.Now(),
		peer:        &peerCache{},
	}
}

// Empty is a snapshot with no resources, served before the first build.
func Empty(tenant string) *Snapshot { return New(tenant, nil, nil) }

func versionOf(views map[View]map[string]*Set) string {
	h := xxhash.New()
	for _, v := range slices.Sorted(maps.Keys(views)) {
		sets := views[v]
		for _, k := range slices.Sorted(maps.Keys(sets)) {
			_, _ = fmt.Fprintf(h, "%s\x00%s\x00%s\x00", v, k, sets[k].Version)
		}
	}
	return fmt.Sprintf("%016x", h.Sum64())
}

// Set returns the resources of typeURL in view, or nil when there are none.
// For ViewMCP, typeURL may be any version of the kind (see MCPKey). Safe on
// a nil Snapshot.
func (s *Snapshot) Set(view View, typeURL string) *Set {
	if s == nil {
		return nil
	}
	if view == ViewMCP {
		typeURL = MCPKey(typeURL)
	}
	return s.Views[view][typeURL]
}

// TypeURLs lists the types present in view, sorted.
func (s *Snapshot) TypeURLs(view View) []string {
	if s == nil {
		return nil
	}
	return slices.Sorted(maps.Keys(s.Views[view]))
}

// withPinned is a copy of s marked pinned (or not), with its own peer
// encoding (the pin travels in its meta). A pin is one tenant's change
// (an operator's rollback, or one restored), so the copy's Breadth is 1:
// its push is not ranked with the mesh-wide build that made the version.
func (s *Snapshot) withPinned(pinned bool) *Snapshot {
	cp := *s
	cp.Pinned, cp.peer, cp.Breadth = pinned, &peerCache{}, 1
	return &cp
}

// withMarks is a copy of s that tells peers the version in rollout
// (candidate) and the one held out (held, why), with its own peer
// encoding.
func (s *Snapshot) withMarks(candidate, held, why string) *Snapshot {
	cp := *s
	cp.Candidate, cp.Held, cp.HeldWhy, cp.peer = candidate, held, why, &peerCache{}
	return &cp
}
