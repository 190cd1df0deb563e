package validate

import (
	"fmt"
	"strings"

	networking "istio.io/api/networking/v1alpha3"
	"k8s.io/apimachinery/pkg/util/validation"
)

func virtualService(vs *networking.VirtualService, add adder) {
	if len(vs.Hosts) == 0 {
		add("spec.hosts: a VirtualService needs at least one host")
	}
	mesh := len(vs.Gateways) == 0
	for _, g := range vs.Gateways {
		mesh = mesh || g == "mesh"
	}
	for i, h := range vs.Hosts {
		host(h, !mesh, fmt.Sprintf("spec.hosts[%d]", i), add)
	}
	if len(vs.Http)+len(vs.Tcp)+len(vs.Tls) == 0 {
		add("spec: a VirtualService needs at least one http, tcp or tls route")
	}
	for i, r := range vs.Http {
		httpRoute(r, fmt.Sprintf("spec.http[%d]", i), add)
	}
}

func httpRoute(r *networking.HTTPRoute, where string, add adder) {
	actions := 0
	for _, set := range []bool{len(r.Route) > 0, r.Redirect != nil, r.DirectResponse != nil, r.Delegate != nil} {
		if set {
			actions++
		}
	}
	if actions != 1 {
		add("%s: exactly one of route, redirect, directResponse and delegate is needed, %d given", where, actions)
	}
	if r.Redirect != nil && r.Rewrite != nil {
		add("%s: redirect and rewrite cannot be combined", where)
	}
	for j, m := range r.Match {
		w := fmt.Sprintf("%s.match[%d]", where, j)
		stringMatch(m.Uri, w+".uri", add)
		stringMatch(m.Method, w+".method", add)
		stringMatch(m.Authority, w+".authority", add)
		for k, h := range m.Headers {
			if k == "" || strings.ToLower(k) != k {
				add("%s.headers: header name %q must be lowercase", w, k)
			}
			stringMatch(h, w+".headers."+k, add)
		}
		if m.Port > 65535 {
			add("%s.port: %d is outside 1-65535", w, m.Port)
		}
	}
	for j, d := range r.Route {
		w := fmt.Sprintf("%s.route[%d]", where, j)
		if d.GetDestination().GetHost() == "" {
			add("%s.destination.host is required", w)
		} else {
			host(d.Destination.Host, false, w+".destination.host", add)
		}
		if d.Weight < 0 || d.Weight > 100 {
			add("%s.weight: %d is outside 0-100", w, d.Weight)
		}
	}
	duration(r.Timeout, where+".timeout", add)
	if rt := r.Retries; rt != nil {
		if rt.Attempts < 0 {
			add("%s.retries.attempts: %d is negative", where, rt.Attempts)
		}
		duration(rt.PerTryTimeout, where+".retries.perTryTimeout", add)
	}
	if f := r.Fault; f != nil {
		if f.Delay == nil && f.Abort == nil {
			add("%s.fault: needs a delay or an abort", where)
		}
		if d := f.Delay; d != nil {
			if d.GetFixedDelay() == nil && d.GetExponentialDelay() == nil {
				add("%s.fault.delay: needs fixedDelay", where)
			}
			duration(d.GetFixedDelay(), where+".fault.delay.fixedDelay", add)
			percent(d.GetPercentage().GetValue(), where+".fault.delay.percentage", add)
		}
		if a := f.Abort; a != nil {
			if s, ok := a.ErrorType.(*networking.HTTPFaultInjection_Abort_HttpStatus); ok && (s.HttpStatus < 200 || s.HttpStatus > 599) {
				add("%s.fault.abort.httpStatus: %d is outside 200-599", where, s.HttpStatus)
			}
			percent(a.GetPercentage().GetValue(), where+".fault.abort.percentage", add)
		}
	}
	if r.MirrorPercentage != nil {
		percent(r.MirrorPercentage.Value, where+".mirrorPercentage", add)
	}
}

func destinationRule(dr *networking.DestinationRule, add adder) {
	if dr.Host == "" {
		add("spec.host is required")
	} else {
		host(dr.Host, false, "spec.host", add)
	}
	trafficPolicy(dr.TrafficPolicy, "spec.trafficPolicy", add)
	seen := map[string]bool{}
	for i, s := range dr.Subsets {
		w := fmt.Sprintf("spec.subsets[%d]", i)
		if s.Name == "" {
			add("%s.name is required", w)
		} else if errs := validation.IsDNS1123Label(s.Name); len(errs) > 0 {
			add("%s.name %q is not a DNS label", w, s.Name)
		}
		if seen[s.Name] {
			add("%s: subset %q is defined twice", w, s.Name)
		}
		seen[s.Name] = true
		trafficPolicy(s.TrafficPolicy, w+".trafficPolicy", add)
	}
}

func trafficPolicy(p *networking.TrafficPolicy, where string, add adder) {
	if p == nil {
		return
	}
	if cp := p.ConnectionPool; cp != nil {
		if cp.Tcp.GetMaxConnections() < 0 || cp.Http.GetHttp1MaxPendingRequests() < 0 || cp.Http.GetHttp2MaxRequests() < 0 || cp.Http.GetMaxRetries() < 0 {
			add("%s.connectionPool: limits must not be negative", where)
		}
		duration(cp.Tcp.GetConnectTimeout(), where+".connectionPool.tcp.connectTimeout", add)
	}
	if od := p.OutlierDetection; od != nil {
		duration(od.Interval, where+".outlierDetection.interval", add)
		duration(od.BaseEjectionTime, where+".outlierDetection.baseEjectionTime", add)
		if od.MaxEjectionPercent < 0 || od.MaxEjectionPercent > 100 {
			add("%s.outlierDetection.maxEjectionPercent: %d is outside 0-100", where, od.MaxEjectionPercent)
		}
	}
	if t := p.Tls; t != nil && t.Mode == networking.ClientTLSSettings_MUTUAL && t.CredentialName == "" && (t.ClientCertificate == "" || t.PrivateKey == "") {
		add("%s.tls: MUTUAL needs clientCertificate and privateKey, or credentialName", where)
	}
	for i, pl := range p.PortLevelSettings {
		port(pl.GetPort().GetNumber(), fmt.Sprintf("%s.portLevelSettings[%d]", where, i), add)
	}
}

func serviceEntry(se *networking.ServiceEntry, add adder) {
	if len(se.Hosts) == 0 {
		add("spec.hosts: a ServiceEntry needs at least one host")
	}
	for i, h := range se.Hosts {
		host(h, false, fmt.Sprintf("spec.hosts[%d]", i), add)
		if strings.HasPrefix(h, "*") && se.Resolution == networking.ServiceEntry_DNS && len(se.Endpoints) == 0 {
			add("spec.hosts[%d]: wildcard host %q cannot be resolved by DNS without endpoints", i, h)
		}
	}
	if len(se.Ports) == 0 {
		add("spec.ports: a ServiceEntry needs at least one port")
	}
	names, numbers := map[string]bool{}, map[uint32]bool{}
	for i, p := range se.Ports {
		w := fmt.Sprintf("spec.ports[%d]", i)
		port(p.Number, w, add)
		if p.Name == "" {
			add("%s.name is required", w)
		}
		if names[p.Name] || numbers[p.Number] {
			add("%s: port name %q or number %d is used twice", w, p.Name, p.Number)
		}
		names[p.Name], numbers[p.Number] = true, true
	}
	if se.WorkloadSelector != nil && len(se.Endpoints) > 0 {
		add("spec: workloadSelector and endpoints cannot both be set")
	}
	if se.Resolution == networking.ServiceEntry_STATIC {
		if len(se.Endpoints) == 0 && se.WorkloadSelector == nil {
			add("spec.endpoints: resolution STATIC needs endpoints or a workloadSelector")
		}
		for i, e := range se.Endpoints {
			if !ip(e.Address) && !strings.HasPrefix(e.Address, "unix://") {
				add("spec.endpoints[%d].address %q: resolution STATIC needs IP addresses", i, e.Address)
			}
		}
	}
	for i, a := range se.Addresses {
		if _, err := parsePrefixOrIP(a); err != nil {
			add("spec.addresses[%d]: %q is not an IP or CIDR", i, a)
		}
	}
}

func sidecar(sc *networking.Sidecar, add adder) {
	if len(sc.Egress) == 0 && len(sc.Ingress) == 0 && sc.OutboundTrafficPolicy == nil {
		add("spec: a Sidecar needs egress, ingress or outboundTrafficPolicy")
	}
	for i, e := range sc.Egress {
		w := fmt.Sprintf("spec.egress[%d]", i)
		if len(e.Hosts) == 0 {
			add("%s.hosts: at least one host is needed", w)
		}
		for j, h := range e.Hosts {
			ns, name, ok := strings.Cut(h, "/")
			if !ok {
				add("%s.hosts[%d]: %q is not namespace/host", w, j, h)
				continue
			}
			if ns != "*" && ns != "." && ns != "~" {
				if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
					add("%s.hosts[%d]: namespace %q is not valid", w, j, ns)
				}
			}
			host(name, true, fmt.Sprintf("%s.hosts[%d]", w, j), add)
		}
		if e.Port != nil {
			port(e.Port.Number, w+".port", add)
		}
	}
}
