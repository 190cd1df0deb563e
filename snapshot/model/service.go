package model

import (
	"net/netip"

	"github.com/xdshard/xdshard/snapshot"

	"fmt"
	"slices"
	"strings"

	networking "istio.io/api/networking/v1alpha3"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// DomainSuffix is the cluster DNS suffix of Kubernetes service host names.
const DomainSuffix = "svc.cluster.local"

// Protocol of a service port, as Istio names it.
type Protocol string

const (
	ProtocolHTTP  Protocol = "HTTP"
	ProtocolHTTP2 Protocol = "HTTP2"
	ProtocolGRPC  Protocol = "GRPC"
	ProtocolHTTPS Protocol = "HTTPS"
	ProtocolTLS   Protocol = "TLS"
	ProtocolTCP   Protocol = "TCP"
)

// IsHTTP reports whether the protocol is served by an HTTP connection
// manager (routes) rather than a TCP proxy.
func (p Protocol) IsHTTP() bool {
	return p == ProtocolHTTP || p == ProtocolHTTP2 || p == ProtocolGRPC
}

// Port is one port of a service.
type Port struct {
	Name       string
	Number     uint32
	Protocol   Protocol
	TargetPort uint32 // default endpoint port when an endpoint names none; 0 = Number
}

// Endpoint is one backend of a service.
type Endpoint struct {
	Address  string
	Ports    map[string]uint32 // service port name -> endpoint port; missing = Port.TargetPort or Number
	Labels   map[string]string
	Locality string // "region/zone/subzone", any part may be empty
	Weight   uint32 // 0 = default
	Ready    bool
}

// PortFor returns the endpoint's port for service port p.
func (e *Endpoint) PortFor(p Port) uint32 {
	if n, ok := e.Ports[p.Name]; ok && n != 0 {
		return n
	}
	if p.TargetPort != 0 {
		return p.TargetPort
	}
	return p.Number
}

// Service is a Kubernetes Service or one host of a ServiceEntry, resolved to
// its endpoints. Immutable once built.
type Service struct {
	Hostname     string   // FQDN: name.ns.svc.cluster.local, or the ServiceEntry host
	Aliases      []string // other names clients use: name, name.ns, name.ns.svc (Kubernetes only)
	Name         string   // the object's name
	Namespace    string
	Kind         Kind // KindService or KindServiceEntry
	Ports        []Port
	Addresses    []string // cluster IPs or ServiceEntry addresses (for DNS)
	Endpoints    []*Endpoint
	ExportTo     []string // raw exportTo; empty means the owning tenant only
	MeshExternal bool
	Resolution   string // "STATIC", "DNS", "NONE" (ServiceEntry); "STATIC" for Kubernetes
	Origin       Origin
}

// Port returns the service port numbered n.
func (s *Service) Port(n uint32) (Port, bool) {
	for _, p := range s.Ports {
		if p.Number == n {
			return p, true
		}
	}
	return Port{}, false
}

// ProtocolFromName derives a port's protocol the way Istio does: an explicit
// appProtocol wins, else the port name's prefix before "-" (http-web, grpc).
// Unknown means TCP.
func ProtocolFromName(name string, appProtocol string) Protocol {
	if p, ok := parseProtocol(appProtocol); ok {
		return p
	}
	prefix, _, _ := strings.Cut(name, "-")
	if p, ok := parseProtocol(prefix); ok {
		return p
	}
	return ProtocolTCP
}

func parseProtocol(s string) (Protocol, bool) {
	switch strings.ToLower(s) {
	case "http", "http1", "kubernetes.io/h1":
		return ProtocolHTTP, true
	case "http2", "kubernetes.io/h2c":
		return ProtocolHTTP2, true
	case "grpc", "grpc-web":
		return ProtocolGRPC, true
	case "https":
		return ProtocolHTTPS, true
	case "tls":
		return ProtocolTLS, true
	case "tcp", "mongo", "mysql", "redis":
		return ProtocolTCP, true
	}
	return "", false
}

// nsObjects is what service resolution reads from one namespace.
type nsObjects struct {
	services       []*Object
	slices         []*Object
	pods           map[string]*Object // by name
	podsByIP       map[string]*Object
	serviceEntries []*Object
	workloads      []*Object
}

// resolveNamespace builds every Service of one namespace from its objects.
// Problems are returned as diagnostics; a bad object never stops the rest.
func resolveNamespace(ns *nsObjects) ([]*Service, []snapshot.Diagnostic) {
	var out []*Service
	var diags []snapshot.Diagnostic
	slicesBySvc := map[string][]*discoveryv1.EndpointSlice{}
	for _, o := range ns.slices {
		es, d := validEndpoints(o)
		diags = append(diags, d...)
		svc := es.Labels[discoveryv1.LabelServiceName]
		if svc == "" {
			diags = append(diags, Warn(o, "EndpointSlice has no label "+discoveryv1.LabelServiceName+"; it belongs to no Service and is ignored"))
			continue
		}
		slicesBySvc[svc] = append(slicesBySvc[svc], es)
	}
	for _, o := range ns.services {
		out = append(out, k8sService(o, slicesBySvc[o.Name], ns))
	}
	for _, o := range ns.serviceEntries {
		svcs, d := serviceEntryServices(o, ns.workloads)
		out = append(out, svcs...)
		diags = append(diags, d...)
	}
	return out, diags
}

func k8sService(o *Object, eps []*discoveryv1.EndpointSlice, ns *nsObjects) *Service {
	svc := o.Body.(*corev1.Service)
	s := &Service{
		Hostname:   fmt.Sprintf("%s.%s.%s", o.Name, o.Namespace, DomainSuffix),
		Aliases:    []string{o.Name, o.Name + "." + o.Namespace, o.Name + "." + o.Namespace + ".svc"},
		Name:       o.Name,
		Namespace:  o.Namespace,
		Kind:       KindService,
		Resolution: "STATIC",
		Origin:     o.Origin,
		ExportTo:   splitList(o.Meta.Annotations[ExportToAnnotation]),
	}
	for _, ip := range svc.Spec.ClusterIPs {
		if ip != "" && ip != corev1.ClusterIPNone {
			s.Addresses = append(s.Addresses, ip)
		}
	}
	if len(s.Addresses) == 0 && svc.Spec.ClusterIP != "" && svc.Spec.ClusterIP != corev1.ClusterIPNone {
		s.Addresses = []string{svc.Spec.ClusterIP}
	}
	for _, p := range svc.Spec.Ports {
		port := Port{Name: p.Name, Number: uint32(p.Port), Protocol: ProtocolFromName(p.Name, deref(p.AppProtocol))}
		if p.TargetPort.IntVal > 0 {
			port.TargetPort = uint32(p.TargetPort.IntVal)
		}
		s.Ports = append(s.Ports, port)
	}
	for _, es := range eps {
		s.Endpoints = append(s.Endpoints, sliceEndpoints(es, ns)...)
	}
	slices.SortFunc(s.Endpoints, func(a, b *Endpoint) int { return strings.Compare(a.Address, b.Address) })
	return s
}

// validEndpoints returns o's EndpointSlice without the addresses no proxy
// could connect to (empty, or not of the slice's addressType), with a
// warning on the slice for each: a bad address costs only itself, not its
// Service. o itself is never changed.
func validEndpoints(o *Object) (*discoveryv1.EndpointSlice, []snapshot.Diagnostic) {
	es := o.Body.(*discoveryv1.EndpointSlice)
	var diags []snapshot.Diagnostic
	var kept []discoveryv1.Endpoint
	changed := false
	for _, e := range es.Endpoints {
		var addrs []string
		for _, a := range e.Addresses {
			if why := badAddress(es.AddressType, a); why != "" {
				diags = append(diags, Warn(o, fmt.Sprintf("endpoint address %q %s; that address is ignored", a, why)))
				changed = true
				continue
			}
			addrs = append(addrs, a)
		}
		e.Addresses = addrs
		kept = append(kept, e)
	}
	if !changed {
		return es, nil
	}
	cp := *es
	cp.Endpoints = kept
	return &cp, diags
}

func badAddress(t discoveryv1.AddressType, a string) string {
	if a == "" {
		return "is empty"
	}
	switch t {
	case "":
		if _, err := netip.ParseAddr(a); err != nil {
			return "is not an IP address"
		}
	case discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6:
		ip, err := netip.ParseAddr(a)
		if err != nil {
			return fmt.Sprintf("is not an %s address", t)
		}
		if (t == discoveryv1.AddressTypeIPv4) != ip.Is4() {
			return fmt.Sprintf("is not an %s address (addressType)", t)
		}
	case discoveryv1.AddressTypeFQDN:
		if len(a) > 253 {
			return "is not a host name"
		}
	}
	return ""
}

func sliceEndpoints(es *discoveryv1.EndpointSlice, ns *nsObjects) []*Endpoint {
	ports := map[string]uint32{}
	for _, p := range es.Ports {
		if p.Port != nil {
			ports[deref(p.Name)] = uint32(*p.Port)
		}
	}
	var out []*Endpoint
	for _, e := range es.Endpoints {
		var pod *Object
		if e.TargetRef != nil && e.TargetRef.Kind == "Pod" {
			pod = ns.pods[e.TargetRef.Name]
		}
		for _, addr := range e.Addresses {
			p := pod
			if p == nil {
				p = ns.podsByIP[addr]
			}
			ep := &Endpoint{Address: addr, Ports: ports, Ready: e.Conditions.Ready == nil || *e.Conditions.Ready}
			if p != nil {
				ep.Labels = p.Meta.Labels
				ep.Locality = p.Meta.Labels["istio-locality"]
			}
			if ep.Locality == "" && e.Zone != nil {
				ep.Locality = "/" + *e.Zone
			}
			out = append(out, ep)
		}
	}
	return out
}

func serviceEntryServices(o *Object, workloads []*Object) ([]*Service, []snapshot.Diagnostic) {
	se := o.Body.(*networking.ServiceEntry)
	var diags []snapshot.Diagnostic
	var ports []Port
	for _, p := range se.Ports {
		ports = append(ports, Port{Name: p.Name, Number: p.Number, Protocol: ProtocolFromName(p.Protocol, p.Protocol), TargetPort: p.TargetPort})
	}
	var eps []*Endpoint
	for _, we := range se.Endpoints {
		eps = append(eps, workloadEndpoint(we))
	}
	if sel := se.WorkloadSelector.GetLabels(); len(sel) > 0 {
		for _, w := range workloads {
			if matchLabels(sel, w.Meta.Labels) {
				ep := workloadEndpoint(w.Body.(*networking.WorkloadEntry))
				ep.Labels = mergeLabels(w.Meta.Labels, ep.Labels)
				eps = append(eps, ep)
			}
		}
	}
	slices.SortFunc(eps, func(a, b *Endpoint) int { return strings.Compare(a.Address, b.Address) })
	resolution := se.Resolution.String()
	var out []*Service
	for _, host := range se.Hosts {
		if strings.HasPrefix(host, "*") {
			diags = append(diags, Warn(o, fmt.Sprintf("wildcard host %q is kept for istiod but gets no cluster: xdshard serves only concrete hosts", host)))
			continue
		}
		out = append(out, &Service{
			Hostname:     host,
			Name:         o.Name,
			Namespace:    o.Namespace,
			Kind:         KindServiceEntry,
			Ports:        ports,
			Addresses:    se.Addresses,
			Endpoints:    eps,
			ExportTo:     se.ExportTo,
			MeshExternal: se.Location == networking.ServiceEntry_MESH_EXTERNAL,
			Resolution:   resolution,
			Origin:       o.Origin,
		})
	}
	return out, diags
}

func workloadEndpoint(we *networking.WorkloadEntry) *Endpoint {
	return &Endpoint{
		Address:  we.Address,
		Ports:    we.Ports,
		Labels:   we.Labels,
		Locality: we.Locality,
		Weight:   we.Weight,
		Ready:    true,
	}
}

// MatchLabels reports whether labels carry every selector pair. An empty
// selector matches everything.
func MatchLabels(selector, labels map[string]string) bool { return matchLabels(selector, labels) }

func matchLabels(selector, labels map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func mergeLabels(a, b map[string]string) map[string]string {
	if len(b) == 0 {
		return a
	}
	out := make(map[string]string, len(a)+len(b))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
