package xds

import (
	"maps"
	"slices"
	"strings"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultcommon "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	fault "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/xdshard/xdshard/snapshot/model"
)

// faultFilter is the name Envoy and grpc-go know the fault filter by.
const faultFilter = "envoy.filters.http.fault"

// routeAction converts an HTTP route's action. ok is false when the route
// must be dropped (a destination that does not exist); that is reported.
func (t *translation) routeAction(o *model.Object, hr *networking.HTTPRoute, port uint32, where string) (action any, perFilter perFilterConfig, ok bool) {
	if hr.Fault != nil {
		perFilter = perFilterConfig{faultFilter: mustAny(faultConfig(hr.Fault))}
	}
	if r := hr.Redirect; r != nil {
		ra := &route.RedirectAction{HostRedirect: r.Authority}
		if r.Uri != "" {
			ra.PathRewriteSpecifier = &route.RedirectAction_PathRedirect{PathRedirect: r.Uri}
		}
		if r.RedirectCode == 301 || r.RedirectCode == 0 {
			ra.ResponseCode = route.RedirectAction_MOVED_PERMANENTLY
		} else if code, known := redirectCodes[r.RedirectCode]; known {
			ra.ResponseCode = code
		} else {
			t.diags.warnf(o, "%s: redirectCode %d is not one Envoy supports (301, 302, 303, 307, 308); 301 is used", where, r.RedirectCode)
		}
		return &route.Route_Redirect{Redirect: ra}, perFilter, true
	}
	if dr := hr.DirectResponse; dr != nil {
		a := &route.DirectResponseAction{Status: dr.Status}
		if b := dr.Body; b != nil {
			a.Body = &core.DataSource{Specifier: &core.DataSource_InlineString{InlineString: b.GetString_()}}
		}
		return &route.Route_DirectResponse{DirectResponse: a}, perFilter, true
	}
	if len(hr.Route) == 0 {
		t.diags.errorf(o, model.Origin{}, "", "%s: no route destination, redirect or directResponse; the route is dropped", where)
		return nil, nil, false
	}
	ra, ok := t.destinations(o, hr.Route, port, where)
	if !ok {
		return nil, nil, false
	}
	ra.Timeout = hr.Timeout
	ra.RetryPolicy = retryPolicy(hr.Retries)
	if !t.applyRewrite(o, ra, hr.Rewrite, where) || !t.applyMirrors(o, ra, hr, port, where) {
		return nil, nil, false
	}
	return &route.Route_Route{Route: ra}, perFilter, true
}

var redirectCodes = map[uint32]route.RedirectAction_RedirectResponseCode{
	302: route.RedirectAction_FOUND, 303: route.RedirectAction_SEE_OTHER,
	307: route.RedirectAction_TEMPORARY_REDIRECT, 308: route.RedirectAction_PERMANENT_REDIRECT,
}

// destinations resolves each destination to its cluster; one destination
// becomes a plain cluster, several a weighted split.
func (t *translation) destinations(o *model.Object, dests []*networking.HTTPRouteDestination, port uint32, where string) (*route.RouteAction, bool) {
	type wc struct {
		name   string
		weight uint32
	}
	var clusters []wc
	total := uint32(0)
	for _, d := range dests {
		name, ok := t.destinationCluster(o, d.Destination, port, where)
		if !ok {
			return nil, false
		}
		w := uint32(max(d.Weight, 0))
		if w == 0 && len(dests) > 1 {
			continue // istiod drops zero-weight destinations of a split
		}
		clusters = append(clusters, wc{name, w})
		total += w
	}
	ra := &route.RouteAction{}
	if len(clusters) == 1 {
		ra.ClusterSpecifier = &route.RouteAction_Cluster{Cluster: clusters[0].name}
	} else {
		if total == 0 {
			t.diags.errorf(o, model.Origin{}, "", "%s: every destination has weight 0; give the destinations weights that sum to 100", where)
			return nil, false
		}
		w := &route.WeightedCluster{}
		for _, c := range clusters {
			w.Clusters = append(w.Clusters, &route.WeightedCluster_ClusterWeight{Name: c.name, Weight: wrapperspb.UInt32(c.weight)})
		}
		ra.ClusterSpecifier = &route.RouteAction_WeightedClusters{WeightedClusters: w}
	}
	ra.HashPolicy = t.hashPolicy(qualify(dests[0].Destination.GetHost(), o.Namespace))
	return ra, true
}

// destinationCluster names the cluster of a destination, or reports why it
// does not exist.
func (t *translation) destinationCluster(o *model.Object, d *networking.Destination, port uint32, where string) (string, bool) {
	host := qualify(d.GetHost(), o.Namespace)
	svc, dr := t.resolve(host)
	if svc == nil {
		t.diags.errorf(o, model.Origin{}, "", "%s: destination host %q (%s) is not a service visible to this tenant; the route is dropped (check the host, or the service's exportTo)", where, d.GetHost(), host)
		return "", false
	}
	p := d.GetPort().GetNumber()
	switch {
	case p != 0:
	case len(svc.Ports) == 1:
		p = svc.Ports[0].Number
	case hasPort(svc, port):
		p = port
	default:
		t.diags.errorf(o, model.Origin{}, "", "%s: destination %s has several ports and none is %d; set destination.port.number (route dropped)", where, host, port)
		return "", false
	}
	if !hasPort(svc, p) {
		t.diags.errorf(o, model.Origin{}, "", "%s: destination %s has no port %d; the route is dropped", where, host, p)
		return "", false
	}
	if d.Subset != "" {
		if subset(dr, d.Subset) == nil {
			t.diags.errorf(o, model.Origin{}, "", "%s: subset %q of %s is not defined by any DestinationRule; the route is dropped (define the subset)", where, d.Subset, host)
			return "", false
		}
	}
	return ClusterName(p, d.Subset, host), true
}

// hashPolicy carries a consistentHash key of the destination's rule onto
// the route, where Envoy computes the hash.
func (t *translation) hashPolicy(host string) []*route.RouteAction_HashPolicy {
	_, dr := t.resolve(host)
	ch := dr.GetTrafficPolicy().GetLoadBalancer().GetConsistentHash()
	switch {
	case ch == nil:
		return nil
	case ch.GetHttpHeaderName() != "":
		return []*route.RouteAction_HashPolicy{{PolicySpecifier: &route.RouteAction_HashPolicy_Header_{Header: &route.RouteAction_HashPolicy_Header{HeaderName: ch.GetHttpHeaderName()}}}}
	case ch.GetUseSourceIp():
		return []*route.RouteAction_HashPolicy{{PolicySpecifier: &route.RouteAction_HashPolicy_ConnectionProperties_{ConnectionProperties: &route.RouteAction_HashPolicy_ConnectionProperties{SourceIp: true}}}}
	case ch.GetHttpQueryParameterName() != "":
		return []*route.RouteAction_HashPolicy{{PolicySpecifier: &route.RouteAction_HashPolicy_QueryParameter_{QueryParameter: &route.RouteAction_HashPolicy_QueryParameter{Name: ch.GetHttpQueryParameterName()}}}}
	case ch.GetHttpCookie() != nil:
		c := ch.GetHttpCookie()
		return []*route.RouteAction_HashPolicy{{PolicySpecifier: &route.RouteAction_HashPolicy_Cookie_{Cookie: &route.RouteAction_HashPolicy_Cookie{Name: c.Name, Path: c.Path, Ttl: c.Ttl}}}}
	}
	return nil
}

func retryPolicy(r *networking.HTTPRetry) *route.RetryPolicy {
	if r == nil || r.Attempts <= 0 {
		return nil
	}
	rp := &route.RetryPolicy{NumRetries: wrapperspb.UInt32(uint32(r.Attempts)), PerTryTimeout: r.PerTryTimeout, RetryOn: r.RetryOn}
	if rp.RetryOn == "" {
		rp.RetryOn = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes" // istiod's default
	}
	return rp
}

func (t *translation) applyRewrite(o *model.Object, ra *route.RouteAction, rw *networking.HTTPRewrite, where string) bool {
	if rw == nil {
		return true
	}
	if rw.Uri != "" {
		ra.PrefixRewrite = rw.Uri
	}
	if r := rw.UriRegexRewrite; r != nil {
		if !t.validRegex(o, where+".rewrite.uriRegexRewrite", r.Match) {
			return false
		}
		ra.RegexRewrite = &matcher.RegexMatchAndSubstitute{Pattern: &matcher.RegexMatcher{Regex: r.Match}, Substitution: r.Rewrite}
	}
	if rw.Authority != "" {
		ra.HostRewriteSpecifier = &route.RouteAction_HostRewriteLiteral{HostRewriteLiteral: rw.Authority}
	}
	return true
}

func (t *translation) applyMirrors(o *model.Object, ra *route.RouteAction, hr *networking.HTTPRoute, port uint32, where string) bool {
	type mirror struct {
		dest *networking.Destination
		pct  *networking.Percent
	}
	var ms []mirror
	if hr.Mirror != nil {
		ms = append(ms, mirror{hr.Mirror, hr.MirrorPercentage})
	}
	for _, m := range hr.Mirrors {
		ms = append(ms, mirror{m.Destination, m.Percentage})
	}
	for _, m := range ms {
		name, ok := t.destinationCluster(o, m.dest, port, where+".mirror")
		if !ok {
			return false
		}
		p := &route.RouteAction_RequestMirrorPolicy{Cluster: name}
		if m.pct != nil {
			p.RuntimeFraction = &core.RuntimeFractionalPercent{DefaultValue: percent(m.pct.Value)}
		}
		ra.RequestMirrorPolicies = append(ra.RequestMirrorPolicies, p)
	}
	return true
}

// percent turns Istio's 0-100 float into Envoy's per-million fraction.
func percent(v float64) *typev3.FractionalPercent {
	return &typev3.FractionalPercent{Numerator: uint32(v * 10000), Denominator: typev3.FractionalPercent_MILLION}
}

func faultConfig(f *networking.HTTPFaultInjection) *fault.HTTPFault {
	out := &fault.HTTPFault{}
	if d := f.Delay; d != nil {
		fd := &faultcommon.FaultDelay{FaultDelaySecifier: &faultcommon.FaultDelay_FixedDelay{FixedDelay: d.GetFixedDelay()}}
		if d.Percentage != nil {
			fd.Percentage = percent(d.Percentage.Value)
		} else if d.Percent > 0 {
			fd.Percentage = percent(float64(d.Percent))
		}
		out.Delay = fd
	}
	if a := f.Abort; a != nil {
		fa := &fault.FaultAbort{}
		switch {
		case a.GetGrpcStatus() != "":
			fa.ErrorType = &fault.FaultAbort_GrpcStatus{GrpcStatus: grpcCode(a.GetGrpcStatus())}
		default:
			fa.ErrorType = &fault.FaultAbort_HttpStatus{HttpStatus: uint32(a.GetHttpStatus())}
		}
		if a.Percentage != nil {
			fa.Percentage = percent(a.Percentage.Value)
		}
		out.Abort = fa
	}
	return out
}

// grpcCode accepts a gRPC status by name ("UNAVAILABLE") as Istio does.
func grpcCode(name string) uint32 {
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		if strings.EqualFold(strings.ReplaceAll(c.String(), "_", ""), strings.ReplaceAll(name, "_", "")) {
			return uint32(c)
		}
	}
	return uint32(codes.Unknown)
}

func applyHeaders(r *route.Route, h *networking.Headers) {
	if h == nil {
		return
	}
	if rq := h.Request; rq != nil {
		r.RequestHeadersToAdd = append(headerOptions(rq.Set, core.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD), headerOptions(rq.Add, core.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD)...)
		r.RequestHeadersToRemove = rq.Remove
	}
	if rs := h.Response; rs != nil {
		r.ResponseHeadersToAdd = append(headerOptions(rs.Set, core.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD), headerOptions(rs.Add, core.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD)...)
		r.ResponseHeadersToRemove = rs.Remove
	}
}

func headerOptions(m map[string]string, action core.HeaderValueOption_HeaderAppendAction) []*core.HeaderValueOption {
	var out []*core.HeaderValueOption
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, &core.HeaderValueOption{Header: &core.HeaderValue{Key: k, Value: m[k]}, AppendAction: action})
	}
	return out
}

func wrapBool(b bool) *wrapperspb.BoolValue { return wrapperspb.Bool(b) }
