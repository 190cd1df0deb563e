package xds

import (
	"strings"
	"testing"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

func TestConsistencyCatchesDanglingReferences(t *testing.T) {
	eds := &cluster.Cluster{Name: "c", ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_EDS}}
	rc := &route.RouteConfiguration{Name: "80", VirtualHosts: []*route.VirtualHost{{Name: "v", Routes: []*route.Route{defaultRoute("missing")}}}}
	cases := map[string]struct {
		clusters, endpoints, listeners, routes []named
	}{
		"cluster without endpoints":    {clusters: []named{{name: "c", msg: eds, eds: true}}},
		"listener to missing routes":   {listeners: []named{{name: "l", rds: []string{"80"}}}},
		"tcp proxy to missing cluster": {listeners: []named{{name: "l", clusters: []string{"nope"}}}},
		"route to missing cluster":     {routes: []named{{name: "80", msg: rc, clusters: clustersOf(rc.VirtualHosts[0].Routes)}}},
	}
	for name, c := range cases {
		err := checkConsistency(c.clusters, c.endpoints, c.listeners, c.routes)
		if err == nil || !strings.Contains(err.Error(), "exist") && !strings.Contains(err.Error(), "endpoints") {
			t.Errorf("%s: got %v, want an error", name, err)
		}
	}
	if err := checkConsistency(nil, nil, nil, nil); err != nil {
		t.Fatalf("empty view: %v", err)
	}
}
