package xds

import (
	"fmt"
	"strings"

	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/xdshard/xdshard/snapshot/model"
)

// grpcListeners builds the proxyless gRPC view, shaped as istiod's grpcgen
// shapes it: for every HTTP service port, an API listener named HOST:PORT
// (the dial target of xds:///HOST:PORT) whose connection manager takes its
// routes by RDS; the names of one service port share one route
// configuration, named by the FQDN.
//
// Every qualified name is served (name.ns, name.ns.svc and the FQDN), since
// a client may dial any of them; the bare short name is left out because it
// depends on the client's namespace.
func (t *translation) grpcListeners() {
	for _, s := range t.services {
		if t.byHost[s.Hostname] != s {
			continue
		}
		t.grpcListenersOf(s, func() {
			for _, p := range s.Ports {
				if !p.Protocol.IsHTTP() {
					continue
				}
				rdsName := fmt.Sprintf("%s:%d", s.Hostname, p.Number)
				for _, host := range grpcHostNames(s) {
					name := fmt.Sprintf("%s:%d", host, p.Number)
					t.out.grpcListen = append(t.out.grpcListen, named{name: name, rds: []string{rdsName}, msg: &listener.Listener{
						Name:        name,
						ApiListener: &listener.ApiListener{ApiListener: mustAny(hcmConfig(name, rdsName))},
					}})
				}
			}
		})
		for _, p := range s.Ports {
			if !p.Protocol.IsHTTP() {
				continue
			}
			// One route configuration per service port, named by the FQDN,
			// answers every name of the service: grpc-go matches the
			// dial target against the virtual host's domains, not against
			// the route configuration's name.
			rdsName := fmt.Sprintf("%s:%d", s.Hostname, p.Number)
			var domains []string
			for _, host := range grpcHostNames(s) {
				name := fmt.Sprintf("%s:%d", host, p.Number)
				domains = append(domains, name, host)
			}
			t.out.grpcRoutes = append(t.out.grpcRoutes, named{name: rdsName, msg: &route.RouteConfiguration{
				Name: rdsName,
				VirtualHosts: []*route.VirtualHost{{
					Name:    rdsName,
					Domains: domains,
					Routes:  t.routesFor(s, p.Number),
				}},
			}})
		}
	}
	sortNamed(t.out.grpcListen)
	sortNamed(t.out.grpcRoutes)
}

func grpcHostNames(s *model.Service) []string {
	out := []string{s.Hostname}
	for _, a := range s.Aliases {
		if strings.Contains(a, ".") {
			out = append(out, a)
		}
	}
	return out
}
