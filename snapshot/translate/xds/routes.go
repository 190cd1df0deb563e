package xds

import (
	"fmt"
	"maps"
	"regexp"
	"slices"

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/xdshard/xdshard/snapshot/model"
)

type routeKey struct {
	host string
	port uint32
}

func defaultRoute(cluster string) *route.Route {
	return &route.Route{
		Name:  "default",
		Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}},
		Action: &route.Route_Route{Route: &route.RouteAction{
			ClusterSpecifier: &route.RouteAction_Cluster{Cluster: cluster},
		}},
	}
}

func (t *translation) vsRoutes(o *model.Object, vs *networking.VirtualService, port uint32) []*route.Route {
	var out []*route.Route
	for i, hr := range vs.Http {
		where := fmt.Sprintf("http[%d]", i)
		if hr.Name != "" {
			where = fmt.Sprintf("http[%d] (%s)", i, hr.Name)
		}
		if hr.Delegate != nil {
			t.diags.warnf(o, "%s: delegate is not supported by xdshard; the route is skipped", where)
			continue
		}
		t.warnUnsupportedRoute(o, hr, where)
		action, perFilter, ok := t.routeAction(o, hr, port, where)
		if !ok {
			continue
		}
		matches := hr.Match
		if len(matches) == 0 {
			matches = []*networking.HTTPMatchRequest{nil}
		}
		for j, m := range matches {
			if m.GetPort() != 0 && m.GetPort() != port {
				continue
			}
			rm, ok := t.routeMatch(o, m, fmt.Sprintf("%s.match[%d]", where, j))
			if !ok {
				continue
			}
			r := &route.Route{Name: hr.Name, Match: rm, TypedPerFilterConfig: perFilter}
			switch a := action.(type) {
			case *route.Route_Route:
				r.Action = a
			case *route.Route_Redirect:
				r.Action = a
			case *route.Route_DirectResponse:
				r.Action = a
			}
			applyHeaders(r, hr.Headers)
			out = append(out, r)
		}
	}
	return out
}

func (t *translation) warnUnsupportedRoute(o *model.Object, hr *networking.HTTPRoute, where string) {
	if hr.CorsPolicy != nil {
		t.diags.warnf(o, "%s: corsPolicy is not supported by xdshard and is not applied", where)
	}
	for _, d := range hr.Route {
		if d.Headers != nil {
			t.diags.warnf(o, "%s: per-destination headers are not supported by xdshard; use the route's headers", where)
			break
		}
	}
	if hr.Fault.GetAbort().GetHttp2Error() != "" {
		t.diags.warnf(o, "%s: fault.abort.http2Error is not supported; use httpStatus or grpcStatus", where)
	}
}

// routeMatch converts one Istio match. It reports and skips what it cannot
// express exactly, rather than widening the match.
func (t *translation) routeMatch(o *model.Object, m *networking.HTTPMatchRequest, where string) (*route.RouteMatch, bool) {
	rm := &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}}
	if m == nil {
		return rm, true
	}
	if len(m.SourceLabels) > 0 || m.SourceNamespace != "" || len(m.Gateways) > 0 {
		t.diags.warnf(o, "%s: sourceLabels, sourceNamespace and gateways select proxies and are not supported by per-tenant snapshots; the match is skipped", where)
		return nil, false
	}
	switch u := m.Uri.GetMatchType().(type) {
	case *networking.StringMatch_Exact:
		rm.PathSpecifier = &route.RouteMatch_Path{Path: u.Exact}
	case *networking.StringMatch_Prefix:
		rm.PathSpecifier = &route.RouteMatch_Prefix{Prefix: u.Prefix}
	case *networking.StringMatch_Regex:
		if !t.validRegex(o, where+".uri", u.Regex) {
			return nil, false
		}
		rm.PathSpecifier = &route.RouteMatch_SafeRegex{SafeRegex: &matcher.RegexMatcher{Regex: u.Regex}}
	}
	if m.IgnoreUriCase {
		rm.CaseSensitive = wrapBool(false)
	}
	headers := map[string]*networking.StringMatch{}
	for k, v := range m.Headers {
		headers[k] = v
	}
	pseudo := map[string]*networking.StringMatch{":method": m.Method, ":authority": m.Authority, ":scheme": m.Scheme}
	for k, v := range pseudo {
		if v != nil {
			headers[k] = v
		}
	}
	for _, name := range slices.Sorted(maps.Keys(headers)) {
		hm, ok := t.headerMatcher(o, where, name, headers[name], false)
		if !ok {
			return nil, false
		}
		rm.Headers = append(rm.Headers, hm)
	}
	for _, name := range slices.Sorted(maps.Keys(m.WithoutHeaders)) {
		hm, ok := t.headerMatcher(o, where, name, m.WithoutHeaders[name], true)
		if !ok {
			return nil, false
		}
		rm.Headers = append(rm.Headers, hm)
	}
	for _, name := range slices.Sorted(maps.Keys(m.QueryParams)) {
		sm, ok := t.stringMatcher(o, where+".queryParams."+name, m.QueryParams[name])
		if !ok {
			return nil, false
		}
		qm := &route.QueryParameterMatcher{Name: name}
		if sm == nil {
			qm.QueryParameterMatchSpecifier = &route.QueryParameterMatcher_PresentMatch{PresentMatch: true}
		} else {
			qm.QueryParameterMatchSpecifier = &route.QueryParameterMatcher_StringMatch{StringMatch: sm}
		}
		rm.QueryParameters = append(rm.QueryParameters, qm)
	}
	return rm, true
}

func (t *translation) headerMatcher(o *model.Object, where, name string, sm *networking.StringMatch, invert bool) (*route.HeaderMatcher, bool) {
	m, ok := t.stringMatcher(o, where+".headers."+name, sm)
	if !ok {
		return nil, false
	}
	hm := &route.HeaderMatcher{Name: name, InvertMatch: invert}
	if m == nil {
		hm.HeaderMatchSpecifier = &route.HeaderMatcher_PresentMatch{PresentMatch: true}
	} else {
		hm.HeaderMatchSpecifier = &route.HeaderMatcher_StringMatch{StringMatch: m}
	}
	return hm, true
}

// stringMatcher converts an Istio StringMatch; nil means "present".
func (t *translation) stringMatcher(o *model.Object, where string, sm *networking.StringMatch) (*matcher.StringMatcher, bool) {
	switch v := sm.GetMatchType().(type) {
	case *networking.StringMatch_Exact:
		return &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Exact{Exact: v.Exact}}, true
	case *networking.StringMatch_Prefix:
		return &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Prefix{Prefix: v.Prefix}}, true
	case *networking.StringMatch_Regex:
		if !t.validRegex(o, where, v.Regex) {
			return nil, false
		}
		return &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_SafeRegex{SafeRegex: &matcher.RegexMatcher{Regex: v.Regex}}}, true
	}
	return nil, true
}

func (t *translation) validRegex(o *model.Object, where, re string) bool {
	if _, err := regexp.Compile(re); err != nil {
		t.diags.errorf(o, model.Origin{}, "", "%s: regex %q is not valid RE2 (%v); the match is skipped", where, re, err)
		return false
	}
	return true
}

type perFilterConfig = map[string]*anypb.Any
