package xds

import (
	"fmt"
	"maps"
	"slices"
	"strconv"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	fault "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	router "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	tlsinspector "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxy "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/xdshard/xdshard/snapshot"
	"github.com/xdshard/xdshard/snapshot/model"
)

// envoyListeners builds the sidecar's outbound listeners: one HTTP listener
// per port (0.0.0.0_PORT, routes by RDS named PORT), and a TCP proxy per
// TCP service port (ADDRESS_PORT), as istiod names them.
func (t *translation) envoyListeners() {
	httpPorts := map[uint32][]*model.Service{}
	for _, s := range t.services {
		if t.byHost[s.Hostname] != s {
			continue
		}
		for _, p := range s.Ports {
			if p.Protocol.IsHTTP() {
				httpPorts[p.Number] = append(httpPorts[p.Number], s)
			}
		}
	}
	domains := newDomainIndex(httpPorts)
	for _, port := range slices.Sorted(maps.Keys(httpPorts)) {
		rcName := strconv.Itoa(int(port))
		vhosts := make([]vhostIn, 0, len(httpPorts[port]))
		for _, s := range httpPorts[port] {
			vh := vhostIn{name: envoyVHName(s, port), parts: t.routesFor(s, port)}
			// With a cache, a service's own domains are in its kept virtual host.
			if vh.own = t.opts.Cache != nil && domains.own(s, port); !vh.own {
				vh.domains = domains.forService(s, port)
			}
			vhosts = append(vhosts, vh)
		}
		t.out.routes = append(t.out.routes, t.routeConfig(rcName, vhosts))
		// An HTTP listener is its port's alone.
		name := "0.0.0.0_" + rcName
		l := named{name: name, rds: []string{rcName}, sig: "http"}
		if l.res = t.reuse("lds", name, l.sig); l.res == nil {
			l.msg = outboundListener(name, "0.0.0.0", port, &listener.FilterChain{Filters: []*listener.Filter{httpConnectionManager("outbound_"+name, rcName)}})
		}
		t.out.listeners = append(t.out.listeners, l)
	}
	t.tcpListeners(httpPorts)
	sortNamed(t.out.listeners)
	sortNamed(t.out.routes)
}

// tcpListeners gives each non-HTTP service port a TCP proxy: on the
// service's address when it has one, else TLS services share 0.0.0.0_PORT
// by SNI. What cannot be told apart is reported.
func (t *translation) tcpListeners(httpPorts map[uint32][]*model.Service) {
	sni := map[uint32][]*listener.FilterChain{}
	sniClusters := map[uint32][]string{}
	for _, s := range t.services {
		if t.byHost[s.Hostname] != s {
			continue
		}
		for _, p := range s.Ports {
			if p.Protocol.IsHTTP() {
				continue
			}
			cluster := ClusterName(p.Number, "", s.Hostname)
			chain := func() *listener.FilterChain {
				return &listener.FilterChain{Filters: []*listener.Filter{tcpProxy(cluster)}}
			}
			switch {
			case len(s.Addresses) > 0:
				// A TCP proxy on an address is its address, port and cluster's alone.
				name := fmt.Sprintf("%s_%d", s.Addresses[0], p.Number)
				l := named{name: name, clusters: []string{cluster}, sig: "tcp\x00" + cluster}
				if l.res = t.reuse("lds", name, l.sig); l.res == nil {
					l.msg = outboundListener(name, s.Addresses[0], p.Number, chain())
				}
				t.out.listeners = append(t.out.listeners, l)
			case (p.Protocol == model.ProtocolTLS || p.Protocol == model.ProtocolHTTPS) && len(httpPorts[p.Number]) == 0:
				c := chain()
				c.FilterChainMatch = &listener.FilterChainMatch{ServerNames: []string{s.Hostname}}
				sni[p.Number] = append(sni[p.Number], c)
				sniClusters[p.Number] = append(sniClusters[p.Number], cluster)
			default:
				t.diags.add(serviceWarning(s, fmt.Sprintf("port %d (%s) has no address to listen on; give the ServiceEntry addresses, or use an HTTP or TLS protocol", p.Number, p.Protocol)))
			}
		}
	}
	for _, port := range slices.Sorted(maps.Keys(sni)) {
		name := fmt.Sprintf("0.0.0.0_%d", port)
		l := outboundListener(name, "0.0.0.0", port, sni[port]...)
		l.ListenerFilters = []*listener.ListenerFilter{{Name: "envoy.filters.listener.tls_inspector", ConfigType: &listener.ListenerFilter_TypedConfig{TypedConfig: mustAny(&tlsinspector.TlsInspector{})}}}
		t.out.listeners = append(t.out.listeners, named{name: name, msg: l, clusters: sniClusters[port]})
	}
}

func outboundListener(name, addr string, port uint32, chains ...*listener.FilterChain) *listener.Listener {
	return &listener.Listener{
		Name:             name,
		Address:          socketAddress(addr, port),
		FilterChains:     chains,
		TrafficDirection: core.TrafficDirection_OUTBOUND,
		// Sidecars receive outbound traffic through iptables capture, not
		// by binding each port, as istiod configures them.
		BindToPort: wrapperspb.Bool(false),
	}
}

// hcmConfig is the connection manager of both views: routes by RDS over
// ADS, the fault filter (for VirtualService fault injection), then router.
func hcmConfig(statPrefix, routeName string) *hcm.HttpConnectionManager {
	return &hcm.HttpConnectionManager{
		StatPrefix: statPrefix,
		CodecType:  hcm.HttpConnectionManager_AUTO,
		RouteSpecifier: &hcm.HttpConnectionManager_Rds{Rds: &hcm.Rds{
			ConfigSource: adsSource(), RouteConfigName: routeName,
		}},
		HttpFilters: []*hcm.HttpFilter{
			{Name: faultFilter, ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: mustAny(&fault.HTTPFault{})}},
			{Name: "envoy.filters.http.router", ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: mustAny(&router.Router{})}},
		},
	}
}

func httpConnectionManager(statPrefix, routeName string) *listener.Filter {
	return &listener.Filter{Name: "envoy.filters.network.http_connection_manager", ConfigType: &listener.Filter_TypedConfig{TypedConfig: mustAny(hcmConfig(statPrefix, routeName))}}
}

func tcpProxy(cluster string) *listener.Filter {
	return &listener.Filter{Name: "envoy.filters.network.tcp_proxy", ConfigType: &listener.Filter_TypedConfig{TypedConfig: mustAny(&tcpproxy.TcpProxy{
		StatPrefix:       cluster,
		ClusterSpecifier: &tcpproxy.TcpProxy_Cluster{Cluster: cluster},
	})}}
}

func serviceWarning(s *model.Service, msg string) snapshot.Diagnostic {
	return snapshot.Diagnostic{Severity: snapshot.SeverityWarning, Object: fmt.Sprintf("%s %s/%s", s.Kind, s.Namespace, s.Name), Namespace: s.Namespace, Origin: s.Origin.String(), Message: msg}
}

// domainIndex drops a name that two services of the tenant would both
// answer to on a port (a short name used in two namespaces): Envoy rejects
// duplicate domains, and only the FQDN is unambiguous then.
type domainIndex struct {
	count map[portName]int
}

type portName struct {
	name string
	port uint32
}

func newDomainIndex(httpPorts map[uint32][]*model.Service) *domainIndex {
	d := &domainIndex{count: map[portName]int{}}
	for port, svcs := range httpPorts {
		for _, s := range svcs {
			d.count[portName{s.Hostname, port}]++
			for _, n := range s.Aliases {
				d.count[portName{n, port}]++
			}
		}
	}
	return d
}

// forService is the domains of s on port.
func (d *domainIndex) forService(s *model.Service, port uint32) []string {
	return portDomains(s, port, func(n string) bool { return d.shared(n, port) && n != s.Hostname })
}

// own tells whether the domains of s on port are all its names: no other
// service of the tenant shares one (the FQDN is never dropped).
func (d *domainIndex) own(s *model.Service, port uint32) bool {
	for _, n := range s.Aliases {
		if n != s.Hostname && d.shared(n, port) {
			return false
		}
	}
	return true
}

func (d *domainIndex) shared(name string, port uint32) bool { return d.count[portName{name, port}] > 1 }

// portDomains are the names of s, bare and with port, but those skip
// drops (nil for none).
func portDomains(s *model.Service, port uint32, skip func(string) bool) []string {
	suffix := ":" + strconv.Itoa(int(port))
	out := make([]string, 0, 2+2*len(s.Aliases))
	for _, n := range hostNames(s) {
		if skip != nil && skip(n) {
			continue
		}
		out = append(out, n, n+suffix)
	}
	return out
}

// envoyVHName names the Envoy view's virtual host of s on port.
func envoyVHName(s *model.Service, port uint32) string {
	return s.Hostname + ":" + strconv.Itoa(int(port))
}

// hostNames lists every name a client may use for s: its FQDN and aliases.
func hostNames(s *model.Service) []string {
	return append([]string{s.Hostname}, s.Aliases...)
}
