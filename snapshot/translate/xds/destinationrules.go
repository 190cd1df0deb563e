package xds

import (
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/xdshard/xdshard/snapshot/model"
)

// destinationRules finds the rule that applies to a host, as istiod does:
// an exact host match before a wildcard, the longest wildcard first.
//
// The hosts are qualified once, when the rules are indexed: a lookup is a
// map read, then a pass over the wildcard rules alone.
type destinationRules struct {
	exact     map[string]*model.Object // qualified host -> the first rule for it
	wildcards []wildcardRule           // in the rules' order
}

type wildcardRule struct {
	pattern string
	obj     *model.Object
}

func newDestinationRules(objs []*model.Object, d *diagnostics) *destinationRules {
	r := &destinationRules{exact: map[string]*model.Object{}}
	seen := r.exact
	for _, o := range objs {
		dr := o.Body.(*networking.DestinationRule)
		if dr.Host == "" {
			d.errorf(o, model.Origin{}, "", "spec.host is empty; name the service this rule is for")
			continue
		}
		if len(dr.GetWorkloadSelector().GetMatchLabels()) > 0 {
			d.warnf(o, "workloadSelector is not applied: snapshots are per tenant")
		}
		warnUnsupportedPolicy(o, dr, d)
		host := qualify(dr.Host, o.Namespace)
		if first, dup := seen[host]; dup {
			d.warnf(o, "another DestinationRule (%s at %s) already applies to %s; this one is ignored (merge them)", first.Ref(), first.Origin, host)
			continue
		}
		seen[host] = o
		if strings.HasPrefix(host, "*") {
			r.wildcards = append(r.wildcards, wildcardRule{host, o})
		}
	}
	return r
}

// forHost returns the rule for host and the object it came from, or nils.
func (r *destinationRules) forHost(host string) (*networking.DestinationRule, *model.Object) {
	if o := r.exact[host]; o != nil {
		return o.Body.(*networking.DestinationRule), o
	}
	var best *model.Object
	bestLen := -1
	for _, w := range r.wildcards {
		if hostMatches(w.pattern, host) && len(w.pattern) > bestLen {
			best, bestLen = w.obj, len(w.pattern)
		}
	}
	if best == nil {
		return nil, nil
	}
	return best.Body.(*networking.DestinationRule), best
}

// subset returns the named subset of dr, or nil.
func subset(dr *networking.DestinationRule, name string) *networking.Subset {
	for _, s := range dr.GetSubsets() {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// policyFor merges, as istiod does, the top-level policy, its per-port
// override and the subset's policy (with its own per-port override).
func policyFor(dr *networking.DestinationRule, ss *networking.Subset, port uint32) *networking.TrafficPolicy {
	p := mergePolicy(nil, dr.GetTrafficPolicy(), port)
	if ss != nil {
		p = mergePolicy(p, ss.GetTrafficPolicy(), port)
	}
	return p
}

func mergePolicy(base, over *networking.TrafficPolicy, port uint32) *networking.TrafficPolicy {
	if over == nil {
		return base
	}
	out := &networking.TrafficPolicy{}
	if base != nil {
		out = proto.Clone(base).(*networking.TrafficPolicy)
	}
	apply := func(lb *networking.LoadBalancerSettings, cp *networking.ConnectionPoolSettings, od *networking.OutlierDetection, tls *networking.ClientTLSSettings) {
		if lb != nil {
			out.LoadBalancer = lb
		}
		if cp != nil {
			out.ConnectionPool = cp
		}
		if od != nil {
			out.OutlierDetection = od
		}
		if tls != nil {
			out.Tls = tls
		}
	}
	apply(over.LoadBalancer, over.ConnectionPool, over.OutlierDetection, over.Tls)
	idx := slices.IndexFunc(over.PortLevelSettings, func(p *networking.TrafficPolicy_PortTrafficPolicy) bool {
		return p.GetPort().GetNumber() == port
	})
	if idx >= 0 {
		pl := over.PortLevelSettings[idx]
		apply(pl.LoadBalancer, pl.ConnectionPool, pl.OutlierDetection, pl.Tls)
	}
	out.PortLevelSettings = nil
	return out
}

// qualify turns a short host into the FQDN of a Kubernetes service in ns,
// as istiod resolves hosts in VirtualServices and DestinationRules.
func qualify(host, ns string) string {
	if strings.Contains(host, ".") || strings.HasPrefix(host, "*") {
		return host
	}
	return host + "." + ns + "." + model.DomainSuffix
}

// warnUnsupportedPolicy reports, once per rule, the traffic-policy fields
// xdshard does not translate, wherever in the rule they appear.
func warnUnsupportedPolicy(o *model.Object, dr *networking.DestinationRule, d *diagnostics) {
	policies := []*networking.TrafficPolicy{dr.TrafficPolicy}
	for _, ss := range dr.Subsets {
		policies = append(policies, ss.TrafficPolicy)
	}
	for _, p := range policies {
		if p.GetTunnel() != nil || p.GetProxyProtocol() != nil || p.GetRetryBudget() != nil {
			d.warnf(o, "trafficPolicy tunnel, proxyProtocol and retryBudget are not supported by xdshard and are not applied")
			return
		}
	}
}
