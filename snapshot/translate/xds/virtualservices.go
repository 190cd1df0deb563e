package xds

import (
	"slices"
	"strings"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/xdshard/xdshard/snapshot/model"
)

// virtualServices binds each service host to the VirtualService that
// routes it. The first VirtualService (by namespace/name) for a host wins;
// the others are reported, since istiod's merge order is not something
// operators should rely on.
type virtualServices struct {
	byHost map[string]*model.Object
}

func newVirtualServices(objs []*model.Object, services map[string]*model.Service, d *diagnostics) *virtualServices {
	v := &virtualServices{byHost: map[string]*model.Object{}}
	for _, o := range objs {
		vs := o.Body.(*networking.VirtualService)
		if len(vs.Gateways) > 0 && !slices.Contains(vs.Gateways, "mesh") {
			continue // a gateway-only VirtualService does not apply to sidecars
		}
		warnUnsupportedVS(o, vs, d)
		for _, h := range vs.Hosts {
			host := qualify(h, o.Namespace)
			if strings.HasPrefix(host, "*") {
				d.warnf(o, "wildcard host %q is not applied to sidecars by xdshard; list the services by name", h)
				continue
			}
			if services[host] == nil {
				d.warnf(o, "host %q (%s) is not a service visible to this tenant; nothing is routed for it", h, host)
				continue
			}
			if first := v.byHost[host]; first != nil {
				d.warnf(o, "host %s is already routed by %s (%s); this VirtualService is ignored for it (merge them)", host, first.Ref(), first.Origin)
				continue
			}
			v.byHost[host] = o
		}
	}
	return v
}

func warnUnsupportedVS(o *model.Object, vs *networking.VirtualService, d *diagnostics) {
	if len(vs.Tcp) > 0 {
		d.warnf(o, "tcp routes are not supported by xdshard; TCP traffic goes to the service's cluster")
	}
	if len(vs.Tls) > 0 {
		d.warnf(o, "tls routes are not supported by xdshard; TLS traffic goes to the service's cluster")
	}
	if len(vs.ExportTo) > 0 && slices.Contains(vs.Gateways, "mesh") && len(vs.Gateways) > 1 {
		d.warnf(o, "gateways other than mesh are kept for istiod; xdshard applies this VirtualService to sidecars only")
	}
}

// forHost returns the VirtualService routing host, or nil.
func (v *virtualServices) forHost(host string) *model.Object { return v.byHost[host] }
