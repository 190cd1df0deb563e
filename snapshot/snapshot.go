package snapshot

import (
	"fmt"
	"slices"
	"strings"
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

// Severity of a Diagnostic.
type Severity string

const (
	SeverityError   Severity = "error"   // the object was rejected
	SeverityWarning Severity = "warning" // the object was used, but part of it was not
)

// Diagnostic is a problem with one input object, kept with the snapshot so
// operators can see why an object is missing or partly applied.
type Diagnostic struct {
	Severity Severity `json:"severity"`
	Object   string   `json:"object"`           // "Kind namespace/name"
	Origin   string   `json:"origin,omitempty"` // "file:line" or "k8s"
	Message  string   `json:"message"`
}

func (d Diagnostic) String() string {
	var b strings.Builder
	if d.Origin != "" {
		b.WriteString(d.Origin)
		b.WriteString(": ")
	}
	if d.Object != "" {
		b.WriteString(d.Object)
		b.WriteString(": ")
	}
	b.WriteString(d.Message)
	return b.String()
}

// Snapshot is one tenant's complete, immutable, versioned config. Never
// modify a Snapshot after it has been published to a Store.
type Snapshot struct {
	Tenant      string
	Version     string // content hash over every view; identical config -> identical version
	Views       map[View]map[string]*Set
	Diagnostics []Diagnostic
	Built       time.Time
	// Revisions maps the tenant's namespaces to their istio.io/rev label,
	// so a revision-scoped istiod is served only its namespaces' config.
	Revisions map[string]string
}

// WithRevisions returns a copy of s carrying the namespaces' revisions. They
// are part of the version: moving a namespace to another istiod revision is
// a change every istiod must see.
func (s *Snapshot) WithRevisions(revs map[string]string) *Snapshot {
	cp := *s
	cp.Revisions = revs
	if len(revs) > 0 {
		h := xxhash.New()
		_, _ = h.WriteString(s.Version)
		keys := make([]string, 0, len(revs))
		for k := range revs {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			_, _ = fmt.Fprintf(h, "\x00%s=%s", k, revs[k])
		}
		cp.Version = fmt.Sprintf("%016x", h.Sum64())
	}
	return &cp
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
	}
}

// Empty is a snapshot with no resources, served before the first build.
func Empty(tenant string) *Snapshot { return New(tenant, nil, nil) }

func versionOf(views map[View]map[string]*Set) string {
	h := xxhash.New()
	viewNames := make([]string, 0, len(views))
	for v := range views {
		viewNames = append(viewNames, string(v))
	}
	slices.Sort(viewNames)
	for _, v := range viewNames {
		sets := views[View(v)]
		keys := make([]string, 0, len(sets))
		for k := range sets {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
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
	out := make([]string, 0, len(s.Views[view]))
	for k := range s.Views[view] {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
