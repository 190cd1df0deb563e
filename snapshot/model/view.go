package model

import (
	"maps"

	"github.com/xdshard/xdshard/snapshot"

	"slices"
	"strings"
)

// TenantView is everything one tenant's builders may read: an immutable,
// consistent slice of the mesh. Nothing of another tenant is in it unless
// that tenant exported it here (or it lives in SharedNamespace).
type TenantView struct {
	Tenant           string
	Namespaces       []string  // the tenant's own namespaces, sorted
	NamespaceObjects []*Object // Namespace objects of the tenant (labels and annotations drive policy)

	// Visible: the tenant's own, SharedNamespace's, and what others export
	// to it. Sorted by hostname (services) or key (objects).
	Services         []*Service
	VirtualServices  []*Object
	DestinationRules []*Object

	// Own: objects in the tenant's namespaces only, sorted by key. Kinds
	// without exportTo. Sidecars and policies in SharedNamespace (the Istio
	// root namespace) apply mesh-wide and are in Root.
	Own  map[Kind][]*Object
	Root map[Kind][]*Object

	Diagnostics []snapshot.Diagnostic // resolution and source problems in the tenant's namespaces

	// Trusted maps each tenant this one trusts (annotation TrustAnnotation
	// on its namespaces) to that tenant's namespaces.
	Trusted map[string][]string
}

// OwnObjects returns the tenant's own objects of kind k.
func (v *TenantView) OwnObjects(k Kind) []*Object { return v.Own[k] }

// View returns tenant's current view.
func (m *Mesh) View(tenant string) *TenantView {
	m.mu.Lock()
	defer m.mu.Unlock()
	v := &TenantView{Tenant: tenant, Own: map[Kind][]*Object{}, Root: map[Kind][]*Object{}}
	v.Namespaces = m.namespacesLocked(tenant)
	own := map[string]bool{}
	for _, ns := range v.Namespaces {
		own[ns] = true
	}
	for _, ns := range slices.Sorted(maps.Keys(m.byNS)) {
		if !own[ns] && ns != SharedNamespace && !m.exportsToLocked(ns, tenant) {
			continue
		}
		r := m.servicesLocked(ns)
		if own[ns] {
			v.Diagnostics = append(v.Diagnostics, r.diags...)
		}
		for _, s := range r.services {
			if m.visibleLocked(s.Namespace, s.ExportTo, tenant) {
				v.Services = append(v.Services, s)
			}
		}
		m.collectObjectsLocked(ns, own[ns], v)
	}
	for _, src := range slices.Sorted(maps.Keys(m.sourceDiags)) {
		for _, d := range m.sourceDiags[src] {
			if own[d.Namespace] {
				v.Diagnostics = append(v.Diagnostics, d)
			}
		}
	}
	v.Trusted = m.trustLocked(v.NamespaceObjects)
	slices.SortStableFunc(v.Services, func(a, b *Service) int { return strings.Compare(a.Hostname, b.Hostname) })
	sortObjects(v.VirtualServices)
	sortObjects(v.DestinationRules)
	sortObjects(v.NamespaceObjects)
	return v
}

func (m *Mesh) collectObjectsLocked(ns string, isOwn bool, v *TenantView) {
	if isOwn {
		if o := m.objects[Key{Kind: KindNamespace, Name: ns}]; o != nil {
			v.NamespaceObjects = append(v.NamespaceObjects, o)
		}
	}
	for _, o := range m.nsObjectsLocked(ns) {
		switch o.Kind {
		case KindNamespace:
		case KindVirtualService:
			if m.visibleLocked(ns, exportToOf(o), v.Tenant) {
				v.VirtualServices = append(v.VirtualServices, o)
			}
		case KindDestinationRule:
			if m.visibleLocked(ns, exportToOf(o), v.Tenant) {
				v.DestinationRules = append(v.DestinationRules, o)
			}
		default:
			if isOwn {
				v.Own[o.Kind] = append(v.Own[o.Kind], o)
			} else if ns == SharedNamespace {
				v.Root[o.Kind] = append(v.Root[o.Kind], o)
			}
		}
	}
}

// exportsToLocked reports whether anything in ns may be exported to tenant.
func (m *Mesh) exportsToLocked(ns, tenant string) bool {
	for _, t := range m.exports[ns] {
		if t == "*" || m.tenantOfLocked(t) == tenant {
			return true
		}
	}
	return false
}

// visibleLocked applies exportTo with the tenant as the unit of isolation:
//   - no exportTo: the owning tenant only (xdshard's default; Istio's mesh-wide
//     default "*" would defeat tenant isolation). SharedNamespace: everyone.
//   - ".": the owning tenant; "*": every tenant; "~": nobody;
//     a namespace name: that namespace's tenant (and always the owner).
func (m *Mesh) visibleLocked(ownerNS string, exportTo []string, tenant string) bool {
	ownerTenant := m.tenantOfLocked(ownerNS)
	if len(exportTo) == 0 {
		return ownerTenant == tenant || ownerNS == SharedNamespace
	}
	if len(exportTo) == 1 && exportTo[0] == "~" {
		return false
	}
	if ownerTenant == tenant {
		return true
	}
	for _, t := range exportTo {
		switch t {
		case "*":
			return true
		case ".", "~":
		default:
			if m.tenantOfLocked(t) == tenant {
				return true
			}
		}
	}
	return false
}

// trustLocked resolves the tenants named by TrustAnnotation on a tenant's
// namespaces to their namespaces. An unknown tenant maps to none.
func (m *Mesh) trustLocked(namespaces []*Object) map[string][]string {
	out := map[string][]string{}
	for _, o := range namespaces {
		for _, t := range splitList(o.Meta.Annotations[TrustAnnotation]) {
			if _, done := out[t]; !done {
				out[t] = m.namespacesLocked(t)
			}
		}
	}
	return out
}
