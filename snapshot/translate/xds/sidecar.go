package xds

import (
	"strings"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/xdshard/xdshard/snapshot/model"
)

// egressServices narrows the tenant's visible services by Sidecar egress:
// the union over the tenant's namespaces of what each namespace's Sidecar
// (or else the root Sidecar) allows. One namespace without either allows
// everything visible.
func egressServices(v *model.TenantView, d *diagnostics) []*model.Service {
	own := namespaceSidecars(v.Own[model.KindSidecar], d)
	root := namespaceSidecars(v.Root[model.KindSidecar], d)
	var rootSC *networking.Sidecar
	if sc := root[model.SharedNamespace]; sc != nil {
		rootSC = sc
	}
	var scopes []egressScope
	for _, ns := range v.Namespaces {
		sc := own[ns]
		if sc == nil {
			sc = rootSC
		}
		if sc == nil {
			return v.Services // this namespace sees everything visible
		}
		scopes = append(scopes, egressScope{ns: ns, sidecar: sc})
	}
	var out []*model.Service
	for _, s := range v.Services {
		for _, sc := range scopes {
			if sc.allows(s) {
				out = append(out, s)
				break
			}
		}
	}
	return out
}

// namespaceSidecars returns the selector-less Sidecar of each namespace.
func namespaceSidecars(objs []*model.Object, d *diagnostics) map[string]*networking.Sidecar {
	out := map[string]*networking.Sidecar{}
	for _, o := range objs {
		sc := o.Body.(*networking.Sidecar)
		if len(sc.GetWorkloadSelector().GetLabels()) > 0 {
			d.warnf(o, "workloadSelector is not applied: snapshots are per tenant, so only a namespace-wide Sidecar (no workloadSelector) narrows egress")
			continue
		}
		if _, dup := out[o.Namespace]; dup {
			d.warnf(o, "a second namespace-wide Sidecar in %s is ignored; keep one per namespace", o.Namespace)
			continue
		}
		if len(sc.Ingress) > 0 || sc.OutboundTrafficPolicy != nil {
			d.warnf(o, "ingress and outboundTrafficPolicy are not applied by xdshard; only egress hosts narrow the tenant's config")
		}
		out[o.Namespace] = sc
	}
	return out
}

type egressScope struct {
	ns      string
	sidecar *networking.Sidecar
}

func (e egressScope) allows(s *model.Service) bool {
	for _, l := range e.sidecar.Egress {
		if l.Port != nil && l.Port.Number != 0 && !hasPort(s, l.Port.Number) {
			continue
		}
		for _, h := range l.Hosts {
			if egressHostMatches(h, e.ns, s) {
				return true
			}
		}
	}
	return false
}

func hasPort(s *model.Service, n uint32) bool {
	_, ok := s.Port(n)
	return ok
}

// egressHostMatches applies Istio's "namespace/host" egress syntax.
func egressHostMatches(entry, sidecarNS string, s *model.Service) bool {
	ns, host, found := strings.Cut(entry, "/")
	if !found {
		ns, host = "*", entry
	}
	switch ns {
	case "*":
	case ".":
		if s.Namespace != sidecarNS {
			return false
		}
	case "~":
		return false
	default:
		if s.Namespace != ns {
			return false
		}
	}
	return hostMatches(host, s.Hostname)
}

// hostMatches matches a host against a pattern: "*", "*.suffix" or exact.
func hostMatches(pattern, host string) bool {
	if pattern == "*" {
		return true
	}
	if suffix, ok := strings.CutPrefix(pattern, "*"); ok {
		return strings.HasSuffix(host, suffix)
	}
	return pattern == host
}
