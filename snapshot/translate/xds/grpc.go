package xds

import (
	"fmt"
	"strconv"
	"strings"

	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/xdshard/xdshard/snapshot"
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
			// the route configuration's name. With a Cache, it is kept
			// with the service port's routes.
			part := t.routesFor(s, p.Number)
			name := grpcRouteName(s, p.Number)
			rc := named{name: name, clusters: part.clusters}
			switch {
			case t.opts.Cache == nil:
				rc.msg = &route.RouteConfiguration{Name: name, VirtualHosts: []*route.VirtualHost{{
					Name: name, Domains: grpcDomains(s, p.Number), Routes: part.routes,
				}}}
			case part.err != nil:
				t.fail(fmt.Errorf("%s %q: %w", snapshot.RouteType, name, part.err))
			default:
				rc.res = part.grpcRC
			}
			t.out.grpcRoutes = append(t.out.grpcRoutes, rc)
		}
	}
	sortNamed(t.out.grpcListen)
	sortNamed(t.out.grpcRoutes)
}

// grpcRouteName names the gRPC view's route configuration of s on port.
func grpcRouteName(s *model.Service, port uint32) string {
	return s.Hostname + ":" + strconv.Itoa(int(port))
}

// grpcDomains are the names a gRPC client may dial s on port by.
func grpcDomains(s *model.Service, port uint32) []string {
	suffix := ":" + strconv.Itoa(int(port))
	var out []string
	for _, host := range grpcHostNames(s) {
		out = append(out, host+suffix, host)
	}
	return out
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
