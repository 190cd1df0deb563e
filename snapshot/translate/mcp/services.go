package mcp

import (
	"slices"

	networking "istio.io/api/networking/v1alpha3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/xdshard/xdshard/snapshot/model"
)

// ServiceEntries turns the tenant's own Kubernetes Services (with their
// endpoints, from EndpointSlices and Pods) into ServiceEntries for
// istiod, labelled GeneratedLabel: an istiod whose only config source is
// xdshard (no k8s:// source) learns the services that xdshard's own
// proxies see. Each is named after its Service, in its namespace, with
// its host, addresses, ports and ready endpoints, and its exportTo; a
// headless Service is a NONE entry, and one with an address but no ready
// endpoint is left out until it has one (istiod rejects a STATIC entry
// without endpoints).
//
// last maps each service to the entry the tenant's last build made of it
// (nil for none). A resolved service is immutable, and the model keeps an
// unchanged one's pointer, so a service in last is given its last entry
// again: Build then knows it for its last resource by pointer, where it
// compared each entry's endpoints field by field (proto.Equal, ~7% of a
// file-driven weight change's CPU). The map returned is for the next
// build.
func ServiceEntries(v *model.TenantView, last map[*model.Service]*model.Object) ([]*model.Object, map[*model.Service]*model.Object) {
	own := map[string]bool{}
	for _, ns := range v.Namespaces {
		own[ns] = true
	}
	users := map[model.Key]bool{}
	for _, o := range v.Own[model.KindServiceEntry] {
		users[o.Key] = true
	}
	var out []*model.Object
	next := make(map[*model.Service]*model.Object, len(last))
	for _, s := range v.Services {
		if s.Kind != model.KindService || !own[s.Namespace] || users[model.Key{Kind: model.KindServiceEntry, Namespace: s.Namespace, Name: s.Name}] {
			continue // a user's own ServiceEntry of that name wins
		}
		o, kept := last[s]
		if !kept {
			o = serviceEntry(s)
		}
		next[s] = o
		if o != nil {
			out = append(out, o)
		}
	}
	return out, next
}

// serviceEntry is the entry made of s, or nil when it has none yet.
func serviceEntry(s *model.Service) *model.Object {
	se := &networking.ServiceEntry{
		Hosts:      []string{s.Hostname},
		Addresses:  slices.Clone(s.Addresses),
		Location:   networking.ServiceEntry_MESH_INTERNAL,
		Resolution: networking.ServiceEntry_STATIC,
		ExportTo:   slices.Clone(s.ExportTo),
	}
	if len(s.Addresses) == 0 {
		// Headless: istiod passes traffic to the address dialled, as it
		// does for a headless Service it reads itself.
		se.Resolution = networking.ServiceEntry_NONE
	}
	for _, p := range s.Ports {
		se.Ports = append(se.Ports, &networking.ServicePort{Number: p.Number, Name: p.Name, Protocol: string(p.Protocol), TargetPort: p.TargetPort})
	}
	for _, e := range s.Endpoints {
		if !e.Ready {
			continue
		}
		we := &networking.WorkloadEntry{Address: e.Address, Labels: e.Labels, Locality: e.Locality, Weight: e.Weight}
		for _, p := range s.Ports {
			if n := e.PortFor(p); n != p.Number {
				if we.Ports == nil {
					we.Ports = map[string]uint32{}
				}
				we.Ports[p.Name] = n
			}
		}
		se.Endpoints = append(se.Endpoints, we)
	}
	if se.Resolution == networking.ServiceEntry_STATIC && len(se.Endpoints) == 0 {
		// istiod rejects a STATIC entry without endpoints; the Service
		// appears once one of its endpoints is ready.
		return nil
	}
	name := s.Name
	return &model.Object{
		Key:        model.Key{Kind: model.KindServiceEntry, Namespace: s.Namespace, Name: name},
		APIVersion: "networking.istio.io/v1",
		Meta: metav1.ObjectMeta{Namespace: s.Namespace, Name: name,
			Labels:      map[string]string{model.GeneratedLabel: "true"},
			Annotations: map[string]string{"xdshard.io/from": "Service " + s.Namespace + "/" + s.Name}},
		Origin: s.Origin,
		Body:   se,
	}
}
