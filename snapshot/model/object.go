package model

import (
	"fmt"
	"maps"
	"slices"

	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	netv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/xdshard/xdshard/snapshot"
)

// Well-known names.
const (
	// TenantLabel on a Namespace names the tenant it belongs to; a namespace
	// without it is a tenant of its own name.
	TenantLabel = "xdshard.io/tenant"
	// SharedNamespace is mesh infrastructure: its services and config are
	// visible to every tenant.
	SharedNamespace = "istio-system"
	// ExportToAnnotation on a Kubernetes Service lists where it is exported,
	// as Istio's networking.istio.io/exportTo does.
	ExportToAnnotation = "networking.istio.io/exportTo"
	// TrustAnnotation on a tenant's Namespace lists other tenants whose
	// workloads may call this tenant's ("a, b").
	TrustAnnotation = "xdshard.io/trusted-tenants"
	// IsolationAnnotation "disabled" on a tenant's Namespace opts the
	// tenant out of generated isolation policies.
	IsolationAnnotation = "xdshard.io/isolation"
	// RolloutAnnotation on a tenant's Namespace turns canary rollout of
	// its new versions on ("canary") or off ("off") whatever the
	// replica's serve --rollout; RolloutPercentAnnotation ("1" to "100")
	// and RolloutSelectorAnnotation (a label selector over the proxies'
	// labels) pick its canaries.
	RolloutAnnotation         = "xdshard.io/rollout"
	RolloutPercentAnnotation  = "xdshard.io/rollout-percent"
	RolloutSelectorAnnotation = "xdshard.io/rollout-selector"
	// RevisionLabel on an Istio config object names the one istiod
	// revision that reads it (Istio's LabelsInRevision: unlabelled objects
	// are read by every istiod). On a Namespace it names the revision that
	// injects and serves the namespace's proxies, not who reads its config.
	RevisionLabel = "istio.io/rev"
	// GeneratedLabel "true" marks what xdshard made (generated policies).
	// A source never reads such an object back as input: it is xdshard's
	// output, applied to the cluster.
	GeneratedLabel = "xdshard.io/generated"
)

// Kind is an input object's kind, as in its manifest.
type Kind string

const (
	KindNamespace           Kind = "Namespace"
	KindService             Kind = "Service"
	KindEndpointSlice       Kind = "EndpointSlice"
	KindPod                 Kind = "Pod"
	KindNetworkPolicy       Kind = "NetworkPolicy"
	KindServiceEntry        Kind = "ServiceEntry"
	KindWorkloadEntry       Kind = "WorkloadEntry"
	KindVirtualService      Kind = "VirtualService"
	KindDestinationRule     Kind = "DestinationRule"
	KindSidecar             Kind = "Sidecar"
	KindGateway             Kind = "Gateway"
	KindPeerAuthentication  Kind = "PeerAuthentication"
	KindAuthorizationPolicy Kind = "AuthorizationPolicy"
)

// KindInfo says how a kind appears in manifests and what Object.Body holds.
type KindInfo struct {
	Group      string   // "" for the core group
	Versions   []string // accepted apiVersion versions
	Namespaced bool
	Istio      bool       // Body is the Istio proto spec; otherwise the whole Kubernetes object
	New        func() any // a new, empty Body
}

var istioVersions = []string{"v1", "v1beta1", "v1alpha3"}

// Kinds lists every kind xdshard reads.
var Kinds = map[Kind]KindInfo{
	KindNamespace:           {Group: "", Versions: []string{"v1"}, New: func() any { return &corev1.Namespace{} }},
	KindService:             {Group: "", Versions: []string{"v1"}, Namespaced: true, New: func() any { return &corev1.Service{} }},
	KindPod:                 {Group: "", Versions: []string{"v1"}, Namespaced: true, New: func() any { return &corev1.Pod{} }},
	KindEndpointSlice:       {Group: "discovery.k8s.io", Versions: []string{"v1"}, Namespaced: true, New: func() any { return &discoveryv1.EndpointSlice{} }},
	KindNetworkPolicy:       {Group: "networking.k8s.io", Versions: []string{"v1"}, Namespaced: true, New: func() any { return &netv1.NetworkPolicy{} }},
	KindServiceEntry:        {Group: "networking.istio.io", Versions: istioVersions, Namespaced: true, Istio: true, New: func() any { return &networking.ServiceEntry{} }},
	KindWorkloadEntry:       {Group: "networking.istio.io", Versions: istioVersions, Namespaced: true, Istio: true, New: func() any { return &networking.WorkloadEntry{} }},
	KindVirtualService:      {Group: "networking.istio.io", Versions: istioVersions, Namespaced: true, Istio: true, New: func() any { return &networking.VirtualService{} }},
	KindDestinationRule:     {Group: "networking.istio.io", Versions: istioVersions, Namespaced: true, Istio: true, New: func() any { return &networking.DestinationRule{} }},
	KindSidecar:             {Group: "networking.istio.io", Versions: istioVersions, Namespaced: true, Istio: true, New: func() any { return &networking.Sidecar{} }},
	KindGateway:             {Group: "networking.istio.io", Versions: istioVersions, Namespaced: true, Istio: true, New: func() any { return &networking.Gateway{} }},
	KindPeerAuthentication:  {Group: "security.istio.io", Versions: []string{"v1", "v1beta1"}, Namespaced: true, Istio: true, New: func() any { return &security.PeerAuthentication{} }},
	KindAuthorizationPolicy: {Group: "security.istio.io", Versions: []string{"v1", "v1beta1"}, Namespaced: true, Istio: true, New: func() any { return &security.AuthorizationPolicy{} }},
}

// KindFor resolves an apiVersion and kind from a manifest, or explains why
// they are not accepted.
func KindFor(apiVersion, kind string) (Kind, error) {
	info, ok := Kinds[Kind(kind)]
	if !ok {
		return "", fmt.Errorf("kind %q is not read by xdshard (known: %v)", kind, KindNames())
	}
	group, version := "", apiVersion
	for i := len(apiVersion) - 1; i >= 0; i-- {
		if apiVersion[i] == '/' {
			group, version = apiVersion[:i], apiVersion[i+1:]
			break
		}
	}
	if group != info.Group || !slices.Contains(info.Versions, version) {
		want := make([]string, len(info.Versions))
		for i, v := range info.Versions {
			want[i] = v
			if info.Group != "" {
				want[i] = info.Group + "/" + v
			}
		}
		return "", fmt.Errorf("apiVersion %q is not accepted for %s; use one of %v", apiVersion, kind, want)
	}
	return Kind(kind), nil
}

// KindNames lists the known kinds, sorted.
func KindNames() []string {
	out := make([]string, 0, len(Kinds))
	for _, k := range slices.Sorted(maps.Keys(Kinds)) {
		out = append(out, string(k))
	}
	return out
}

// Key identifies an object. Namespace is empty for Namespace objects.
type Key struct {
	Kind      Kind
	Namespace string
	Name      string
}

func (k Key) String() string {
	if k.Namespace == "" {
		return fmt.Sprintf("%s %s", k.Kind, k.Name)
	}
	return fmt.Sprintf("%s %s/%s", k.Kind, k.Namespace, k.Name)
}

// Origin is where an object came from: a manifest file and line, or a
// Kubernetes cluster (File "k8s", Line 0).
type Origin struct {
	File string
	Line int
}

func (o Origin) String() string {
	if o.File == "" {
		return ""
	}
	if o.Line == 0 {
		return o.File
	}
	return fmt.Sprintf("%s:%d", o.File, o.Line)
}

// Object is one input object. It is immutable once handed to the Mesh: an
// update replaces the whole Object.
//
// Body holds, for Kubernetes kinds, the whole typed object (*corev1.Service,
// *corev1.Namespace, *discoveryv1.EndpointSlice, *corev1.Pod,
// *netv1.NetworkPolicy); for Istio kinds, the proto spec
// (*networking.VirtualService, *security.AuthorizationPolicy, ...), with the
// object's metadata in Meta.
type Object struct {
	Key
	APIVersion string
	Meta       metav1.ObjectMeta
	Origin     Origin
	Body       any
}

// Ref is the object's key as a string, "Kind namespace/name", as used in
// diagnostics.
func (o *Object) Ref() string { return o.Key.String() }

// Change is one object added, updated (Object set) or deleted (Object nil).
type Change struct {
	Key    Key
	Object *Object
}

// ByNamespace groups objects by namespace; a Namespace object goes with
// the namespace it names.
func ByNamespace(objs []*Object) map[string][]*Object {
	out := map[string][]*Object{}
	for _, o := range objs {
		ns := o.Namespace
		if o.Kind == KindNamespace {
			ns = o.Name
		}
		out[ns] = append(out[ns], o)
	}
	return out
}

// Adds is the changes that add (or update) each of objs.
func Adds(objs []*Object) []Change {
	out := make([]Change, len(objs))
	for i, o := range objs {
		out[i] = Change{Key: o.Key, Object: o}
	}
	return out
}

// Reject is the diagnostic of an object left out, with the reason and fix.
func Reject(o *Object, msg string) snapshot.Diagnostic {
	return snapshot.Diagnostic{Severity: snapshot.SeverityError, Object: o.Ref(), Namespace: o.Namespace, Origin: o.Origin.String(), Message: msg}
}

// Warn is the diagnostic of an object used in part.
func Warn(o *Object, msg string) snapshot.Diagnostic {
	d := Reject(o, msg)
	d.Severity = snapshot.SeverityWarning
	return d
}

// Problem is the diagnostic of an input that is not (yet) an object: an
// unreadable file, a document that does not decode. key, when the
// document's header could be read, names the object.
func Problem(origin Origin, key *Key, msg string) snapshot.Diagnostic {
	d := snapshot.Diagnostic{Severity: snapshot.SeverityError, Origin: origin.String(), Message: msg}
	if key != nil {
		d.Object, d.Namespace = key.String(), key.Namespace
	}
	return d
}
