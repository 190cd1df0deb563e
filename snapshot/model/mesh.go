package model

import (
	"github.com/xdshard/xdshard/snapshot"
	"reflect"

	"cmp"
	"maps"
	"slices"
	"sync"

	networking "istio.io/api/networking/v1alpha3"
	corev1 "k8s.io/api/core/v1"
)

// Mesh is the current set of input objects, indexed by namespace and
// tenant. It is safe for concurrent use: mu guards every field. Objects are
// immutable; an update replaces the pointer, so a TenantView taken earlier
// stays consistent.
type Mesh struct {
	mu       sync.Mutex
	objects  map[Key]*Object
	byNS     map[string]map[Key]*Object
	resolved map[string]*resolvedNS // namespace -> services, cleared when its inputs change
	// previous holds a namespace's resolution cleared by a change until it
	// is resolved again: its services that did not change keep their
	// pointers, so translation caches keyed by them still hit.
	previous map[string]*resolvedNS
	// sorted is each namespace's objects sorted by key, made when first
	// asked for since the namespace last changed: every tenant's view
	// reads istio-system's.
	sorted      map[string][]*Object
	exports     map[string][]string              // namespace -> exportTo targets of its objects beyond its tenant
	sourceDiags map[string][]snapshot.Diagnostic // source (e.g. a file) -> its diagnostics
}

type resolvedNS struct {
	services []*Service
	diags    []snapshot.Diagnostic
}

// NewMesh returns an empty mesh.
func NewMesh() *Mesh {
	return &Mesh{
		objects:     map[Key]*Object{},
		byNS:        map[string]map[Key]*Object{},
		resolved:    map[string]*resolvedNS{},
		previous:    map[string]*resolvedNS{},
		sorted:      map[string][]*Object{},
		exports:     map[string][]string{},
		sourceDiags: map[string][]snapshot.Diagnostic{},
	}
}

func nsOf(k Key) string {
	if k.Kind == KindNamespace {
		return k.Name
	}
	return k.Namespace
}

// Apply records changes and returns the tenants whose view they may alter:
// the tenant of each changed namespace (before and after the change), every
// tenant for a change in SharedNamespace, and the tenants an object is (or
// was) exported to.
func (m *Mesh) Apply(changes []Change) map[string]bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	affected := map[string]bool{}
	touched := map[string]bool{}
	for _, c := range changes {
		ns := nsOf(c.Key)
		if !touched[ns] {
			touched[ns] = true
			m.addReachLocked(ns, affected)
		}
		old := m.objects[c.Key]
		if old != nil {
			delete(m.objects, c.Key)
			delete(m.byNS[ns], c.Key)
			if len(m.byNS[ns]) == 0 {
				delete(m.byNS, ns)
			}
		}
		if c.Object != nil {
			m.objects[c.Key] = c.Object
			if m.byNS[ns] == nil {
				m.byNS[ns] = map[Key]*Object{}
			}
			m.byNS[ns][c.Key] = c.Object
		}
		if affectsServices(c.Key.Kind) {
			if r := m.resolved[ns]; r != nil {
				m.previous[ns] = r
			}
			delete(m.resolved, ns)
		}
	}
	for ns := range touched {
		delete(m.sorted, ns)
		m.indexExportsLocked(ns)
		m.addReachLocked(ns, affected)
	}
	return affected
}

func affectsServices(k Kind) bool {
	switch k {
	case KindService, KindEndpointSlice, KindPod, KindServiceEntry, KindWorkloadEntry:
		return true
	}
	return false
}

// addReachLocked adds to set every tenant that can see something of ns.
func (m *Mesh) addReachLocked(ns string, set map[string]bool) {
	if ns == SharedNamespace {
		for _, t := range m.tenantsLocked() {
			set[t] = true
		}
		return
	}
	if _, known := m.byNS[ns]; !known {
		return
	}
	set[m.tenantOfLocked(ns)] = true
	for _, target := range m.exports[ns] {
		if target == "*" {
			for _, t := range m.tenantsLocked() {
				set[t] = true
			}
			return
		}
		set[m.tenantOfLocked(target)] = true
	}
}

// indexExportsLocked records where ns's objects are exported, so views and
// change fan-out need not scan every object of every namespace.
func (m *Mesh) indexExportsLocked(ns string) {
	seen := map[string]bool{}
	var targets []string
	for _, o := range m.byNS[ns] {
		for _, t := range exportToOf(o) {
			if t != "." && t != "~" && !seen[t] {
				seen[t] = true
				targets = append(targets, t)
			}
		}
	}
	slices.Sort(targets)
	if len(targets) == 0 {
		delete(m.exports, ns)
		return
	}
	m.exports[ns] = targets
}

// exportToOf returns an object's raw exportTo list, for the kinds that have one.
func exportToOf(o *Object) []string {
	switch b := o.Body.(type) {
	case *corev1.Service:
		return splitList(b.Annotations[ExportToAnnotation])
	case *networking.ServiceEntry:
		return b.ExportTo
	case *networking.VirtualService:
		return b.ExportTo
	case *networking.DestinationRule:
		return b.ExportTo
	}
	return nil
}

// SetDiagnostics replaces the diagnostics reported by source (a file name,
// say) and returns the tenants whose status changes.
func (m *Mesh) SetDiagnostics(source string, diags []snapshot.Diagnostic) map[string]bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if slices.Equal(m.sourceDiags[source], diags) {
		// Said again (a NetworkPolicy that fails to apply on every
		// reconciliation): no tenant's status changes. Rebuilding would
		// wake the reconciliation again, which would say it again.
		return nil
	}
	affected := map[string]bool{}
	for _, d := range append(slices.Clone(m.sourceDiags[source]), diags...) {
		if d.Namespace != "" {
			affected[m.tenantOfLocked(d.Namespace)] = true
		}
	}
	if len(diags) == 0 {
		delete(m.sourceDiags, source)
	} else {
		m.sourceDiags[source] = diags
	}
	return affected
}

// SourceDiagnostics returns every diagnostic reported by sources, including
// those that name no namespace.
func (m *Mesh) SourceDiagnostics() []snapshot.Diagnostic {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []snapshot.Diagnostic
	for _, src := range slices.Sorted(maps.Keys(m.sourceDiags)) {
		out = append(out, m.sourceDiags[src]...)
	}
	return out
}

// TenantOf returns the tenant of a namespace, and whether the namespace is
// known to the mesh.
func (m *Mesh) TenantOf(namespace string) (string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.byNS[namespace]
	return m.tenantOfLocked(namespace), ok
}

func (m *Mesh) tenantOfLocked(ns string) string {
	return TenantOfNamespace(m.objects[Key{Kind: KindNamespace, Name: ns}], ns)
}

// TenantOfNamespace is the tenant of namespace name, whose Namespace
// object is o (nil when there is none): its TenantLabel, else the
// namespace itself.
func TenantOfNamespace(o *Object, name string) string {
	if o != nil {
		if t := o.Meta.Labels[TenantLabel]; t != "" {
			return t
		}
	}
	return name
}

// Tenants lists every tenant, sorted. SharedNamespace is a tenant of its own
// (its gateways are served like any proxy) whose services every tenant sees.
func (m *Mesh) Tenants() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.tenantsLocked()
}

func (m *Mesh) tenantsLocked() []string {
	set := map[string]bool{}
	for ns := range m.byNS {
		set[m.tenantOfLocked(ns)] = true
	}
	return slices.Sorted(maps.Keys(set))
}

// Namespaces lists a tenant's namespaces, sorted.
func (m *Mesh) Namespaces(tenant string) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.namespacesLocked(tenant)
}

func (m *Mesh) namespacesLocked(tenant string) []string {
	var out []string
	for ns := range m.byNS {
		if m.tenantOfLocked(ns) == tenant {
			out = append(out, ns)
		}
	}
	slices.Sort(out)
	return out
}

// Object returns the object with key k, or nil.
func (m *Mesh) Object(k Key) *Object {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.objects[k]
}

// Objects returns every object, sorted by key.
func (m *Mesh) Objects() []*Object {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*Object, 0, len(m.objects))
	for _, o := range m.objects {
		out = append(out, o)
	}
	sortObjects(out)
	return out
}

func (m *Mesh) servicesLocked(ns string) *resolvedNS {
	if r := m.resolved[ns]; r != nil {
		return r
	}
	in := &nsObjects{pods: map[string]*Object{}, podsByIP: map[string]*Object{}}
	for _, o := range m.nsObjectsLocked(ns) {
		switch o.Kind {
		case KindService:
			in.services = append(in.services, o)
		case KindEndpointSlice:
			in.slices = append(in.slices, o)
		case KindPod:
			in.pods[o.Name] = o
			if ip := o.Body.(*corev1.Pod).Status.PodIP; ip != "" {
				in.podsByIP[ip] = o
			}
		case KindServiceEntry:
			in.serviceEntries = append(in.serviceEntries, o)
		case KindWorkloadEntry:
			in.workloads = append(in.workloads, o)
		}
	}
	svcs, diags := resolveNamespace(in)
	if prev := m.previous[ns]; prev != nil {
		keepUnchanged(svcs, prev.services)
		delete(m.previous, ns)
	}
	r := &resolvedNS{services: svcs, diags: diags}
	m.resolved[ns] = r
	return r
}

// keepUnchanged replaces each of svcs equal to one of prev by that one:
// a resolved Service is immutable, and an unchanged service keeps its
// pointer across a change to its namespace.
func keepUnchanged(svcs, prev []*Service) {
	type key struct {
		kind           Kind
		name, hostname string
	}
	old := make(map[key]*Service, len(prev))
	for _, s := range prev {
		old[key{s.Kind, s.Name, s.Hostname}] = s
	}
	for i, s := range svcs {
		if o := old[key{s.Kind, s.Name, s.Hostname}]; o != nil && reflect.DeepEqual(o, s) {
			svcs[i] = o
		}
	}
}

// nsObjectsLocked returns the objects of ns, sorted by key. The slice is
// shared: callers must not change it.
func (m *Mesh) nsObjectsLocked(ns string) []*Object {
	if objs, ok := m.sorted[ns]; ok {
		return objs
	}
	objs := make([]*Object, 0, len(m.byNS[ns]))
	for _, o := range m.byNS[ns] {
		objs = append(objs, o)
	}
	sortObjects(objs)
	m.sorted[ns] = objs
	return objs
}

func sortObjects(objs []*Object) {
	slices.SortFunc(objs, func(a, b *Object) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
}

// ServicesNamed returns every resolved service of the mesh whose hostname
// is host, in any namespace, sorted by namespace.
func (m *Mesh) ServicesNamed(host string) []*Service {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*Service
	for _, ns := range slices.Sorted(maps.Keys(m.byNS)) {
		for _, s := range m.servicesLocked(ns).services {
			if s.Hostname == host {
				out = append(out, s)
			}
		}
	}
	return out
}
