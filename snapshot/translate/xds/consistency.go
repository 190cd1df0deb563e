package xds

import (
	"fmt"

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// checkConsistency proves a view is complete: every route configuration a
// listener names exists, every cluster a route or TCP proxy uses exists,
// and every EDS cluster has its endpoints. A proxy given an inconsistent
// view waits forever for what is missing, so this is a bug, not a warning.
func checkConsistency(clusters, endpoints, listeners, routes []named) error {
	have := func(items []named) map[string]bool {
		m := make(map[string]bool, len(items))
		for _, it := range items {
			m[it.name] = true
		}
		return m
	}
	cs, es, rs := have(clusters), have(endpoints), have(routes)
	for _, c := range clusters {
		if c.eds && !es[c.name] {
			return fmt.Errorf("cluster %s has no endpoints resource", c.name)
		}
	}
	for _, l := range listeners {
		for _, name := range l.rds {
			if !rs[name] {
				return fmt.Errorf("listener %s: route configuration %q does not exist", l.name, name)
			}
		}
		for _, c := range l.clusters {
			if !cs[c] {
				return fmt.Errorf("listener %s: tcp proxy cluster %s does not exist", l.name, c)
			}
		}
	}
	for _, r := range routes {
		for _, c := range r.clusters {
			if !cs[c] {
				return fmt.Errorf("route configuration %s: cluster %s does not exist", r.name, c)
			}
		}
	}
	return nil
}

func routeClusters(r *route.Route) []string {
	a := r.GetRoute()
	if a == nil {
		return nil
	}
	var out []string
	if c := a.GetCluster(); c != "" {
		out = append(out, c)
	}
	for _, w := range a.GetWeightedClusters().GetClusters() {
		out = append(out, w.Name)
	}
	for _, m := range a.RequestMirrorPolicies {
		out = append(out, m.Cluster)
	}
	return out
}
