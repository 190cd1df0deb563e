package xds

import (
	"bytes"
	"fmt"

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/xdshard/xdshard/snapshot"
	"github.com/xdshard/xdshard/snapshot/model"
)

// A route configuration aggregates a tenant's services, but each of its
// virtual hosts is one service port's: a weight change in one
// VirtualService changes one virtual host. With a Cache, each service
// port's routes are translated, validated and encoded once and kept
// (partRoutes); a route configuration is then assembled from the bytes of
// its virtual hosts, without building or marshalling the routes again.
// Protobuf lets a message be written field by field, and a deterministic
// encoding writes fields in number order, so the assembled bytes are those
// proto.Marshal would write for the whole message (the property test in
// translate checks it byte for byte against builds without a cache).
//
// Protobuf field numbers the assembly writes.
const (
	fieldRCVirtualHosts = 2 // RouteConfiguration.virtual_hosts
	fieldVHRoutes       = 3 // VirtualHost.routes
)

var deterministic = proto.MarshalOptions{Deterministic: true}

// routePart is one service port's routes, shared by both views' virtual
// hosts of it.
type routePart struct {
	routes   []*route.Route // without a cache: the messages
	clusters []string       // the clusters the routes send or mirror to
	err      error          // a part fails validation: a translation bug, and the build fails

	// With a cache, made once while the part is kept, each validated:
	envoyVH []byte             // the Envoy view's virtual host, with the service's own domains
	headLen int                // where in envoyVH its routes start
	grpcRC  *snapshot.Resource // the gRPC view's route configuration of the service port
}

// routesField is the routes encoded as VirtualHost's field routes.
func (p *routePart) routesField() []byte { return p.envoyVH[p.headLen:] }

// hostDep is one lookup a service port's routes made while translated:
// what a destination host resolved to. A kept part is reused only where
// every lookup resolves the same again (routes name other services'
// clusters and subsets, and what a tenant sees of them is its own).
type hostDep struct {
	host string
	svc  *model.Service
	rule *model.Object
}

// routesFor returns the routes of service s on port: its VirtualService's
// HTTP routes, or one default route to the service's cluster. Both views
// use the same routes, so they are translated once per service port
// (which also reports each problem once); with a Cache, once while the
// service, its VirtualService and what the routes refer to do not change.
func (t *translation) routesFor(s *model.Service, port uint32) *routePart {
	key := routeKey{s.Hostname, port}
	if p, ok := t.routeCache[key]; ok {
		return p
	}
	vs := t.vs.forHost(s.Hostname)
	var p *routePart
	if t.opts.Cache == nil {
		routes := t.translateRoutes(s, vs, port)
		p = &routePart{routes: routes, clusters: clustersOf(routes)}
	} else {
		p = t.cachedRoutes(s, vs, port)
	}
	t.routeCache[key] = p
	return p
}

func (t *translation) cachedRoutes(s *model.Service, vs *model.Object, port uint32) *routePart {
	key := cacheKey{svc: s, rule: vs, port: port, part: partRoutes}
	if e := t.cached(key, t.depsHold); e != nil {
		for _, d := range e.diags {
			t.diags.add(d)
		}
		return e.routes
	}
	all := t.diags
	t.diags, t.deps = newDiagnostics(), []hostDep{}
	routes := t.translateRoutes(s, vs, port)
	e := &cacheEntry{diags: t.diags.list(), deps: t.deps}
	t.diags, t.deps = all, nil
	for _, d := range e.diags {
		t.diags.add(d)
	}
	p := &routePart{clusters: clustersOf(routes)}
	p.err = p.encode(s, port, routes)
	if p.err == nil {
		e.routes = p
		t.fresh[key] = e
	}
	return p
}

func (t *translation) translateRoutes(s *model.Service, vs *model.Object, port uint32) []*route.Route {
	if vs == nil {
		return []*route.Route{defaultRoute(ClusterName(port, "", s.Hostname))}
	}
	return t.vsRoutes(vs, vs.Body.(*networking.VirtualService), port)
}

// resolve is what a route's destination host is for this tenant: its
// service and DestinationRule, recorded while a kept part is translated.
func (t *translation) resolve(host string) (*model.Service, *networking.DestinationRule) {
	svc := t.byHost[host]
	dr, obj := t.rules.forHost(host)
	if t.deps != nil {
		t.deps = append(t.deps, hostDep{host, svc, obj})
	}
	return svc, dr
}

// depsHold tells whether every lookup e's routes made resolves the same
// in this translation.
func (t *translation) depsHold(e *cacheEntry) bool {
	for _, d := range e.deps {
		if t.byHost[d.host] != d.svc {
			return false
		}
		if _, obj := t.rules.forHost(d.host); obj != d.rule {
			return false
		}
	}
	return true
}

// encode makes what both views take of the part: the Envoy view's virtual
// host (with the domains the service has when no other service of the
// tenant shares a name with it, as is usual) and the gRPC view's route
// configuration, which the service port alone decides.
func (p *routePart) encode(s *model.Service, port uint32, routes []*route.Route) error {
	field, err := encodeRoutes(routes)
	if err != nil {
		return err
	}
	head := &route.VirtualHost{Name: envoyVHName(s, port), Domains: portDomains(s, port, nil)}
	if err := head.Validate(); err != nil {
		return fmt.Errorf("virtual host %q fails validation: %w", head.Name, err)
	}
	if p.envoyVH, err = deterministic.Marshal(head); err != nil {
		return err
	}
	p.headLen = len(p.envoyVH)
	p.envoyVH = append(p.envoyVH, field...)

	name := grpcRouteName(s, port)
	rc := &route.RouteConfiguration{Name: name}
	ghead := &route.VirtualHost{Name: name, Domains: grpcDomains(s, port)}
	if err := rc.Validate(); err != nil {
		return fmt.Errorf("route configuration %q fails validation: %w", name, err)
	}
	if err := ghead.Validate(); err != nil {
		return fmt.Errorf("virtual host %q fails validation: %w", name, err)
	}
	vb, err := deterministic.Marshal(ghead)
	if err != nil {
		return err
	}
	b, err := deterministic.Marshal(rc)
	if err != nil {
		return err
	}
	b = appendBytesField(b, fieldRCVirtualHosts, append(vb, field...))
	p.grpcRC = snapshot.FromBytes(name, snapshot.RouteType, b)
	return nil
}

// encodeRoutes validates each route and encodes them as VirtualHost's
// field routes.
func encodeRoutes(routes []*route.Route) ([]byte, error) {
	var b []byte
	for i, r := range routes {
		if err := r.Validate(); err != nil {
			return nil, fmt.Errorf("route %d (%q) fails validation: %w", i, r.Name, err)
		}
		var err error
		if b, err = appendField(b, fieldVHRoutes, r); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// appendField appends m as field num of an enclosing message.
func appendField(b []byte, num protowire.Number, m proto.Message) ([]byte, error) {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(deterministic.Size(m)))
	return deterministic.MarshalAppend(b, m)
}

// appendBytesField appends already-encoded bytes as field num.
func appendBytesField(b []byte, num protowire.Number, v []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

func clustersOf(routes []*route.Route) []string {
	var out []string
	for _, r := range routes {
		out = append(out, routeClusters(r)...)
	}
	return out
}

// vhostIn is one virtual host of an Envoy route configuration being made:
// its service port's routes, and its domains, which are the service's own
// unless another service of the tenant shares a name with it.
type vhostIn struct {
	name    string
	domains []string // unless own
	own     bool     // (with a cache) the domains are the service's own: parts.envoyVH has them
	parts   *routePart
}

// routeConfig makes the Envoy route configuration name of vhosts: whole
// without a cache; with one, assembled from the kept virtual hosts, and
// the tenant's last build's resource when the bytes come out the same.
func (t *translation) routeConfig(name string, vhosts []vhostIn) named {
	var clusters []string
	for _, vh := range vhosts {
		clusters = append(clusters, vh.parts.clusters...)
	}
	validateClusters := wrapperspb.Bool(false)
	if t.opts.Cache == nil {
		rc := &route.RouteConfiguration{Name: name, ValidateClusters: validateClusters}
		for _, vh := range vhosts {
			rc.VirtualHosts = append(rc.VirtualHosts, &route.VirtualHost{Name: vh.name, Domains: vh.domains, Routes: vh.parts.routes})
		}
		return named{name: name, msg: rc, clusters: clusters}
	}
	b, err := t.assembleRC(name, validateClusters, vhosts)
	if err != nil {
		t.fail(fmt.Errorf("%s %q: %w", snapshot.RouteType, name, err))
		return named{name: name}
	}
	res := t.assembled("rds", snapshot.RouteType, name, b, func() error {
		// The kept parts were validated when made; what is left is the
		// configuration's own fields, and the heads made here.
		if err := (&route.RouteConfiguration{Name: name, ValidateClusters: validateClusters}).Validate(); err != nil {
			return err
		}
		for _, vh := range vhosts {
			if vh.own {
				continue
			}
			if err := (&route.VirtualHost{Name: vh.name, Domains: vh.domains}).Validate(); err != nil {
				return err
			}
		}
		return nil
	})
	return named{name: name, res: res, clusters: clusters}
}

// assembleRC writes a route configuration's bytes, field by field in
// number order, as a deterministic marshal writes them.
func (t *translation) assembleRC(name string, validateClusters *wrapperspb.BoolValue, vhosts []vhostIn) ([]byte, error) {
	size := len(name) + 16
	for _, vh := range vhosts {
		if vh.parts.err != nil {
			return nil, vh.parts.err
		}
		size += len(vh.parts.envoyVH) + 16
	}
	b, err := deterministic.MarshalAppend(make([]byte, 0, size), &route.RouteConfiguration{Name: name})
	if err != nil {
		return nil, err
	}
	var vb []byte
	for _, vh := range vhosts {
		if vh.own {
			b = appendBytesField(b, fieldRCVirtualHosts, vh.parts.envoyVH)
			continue
		}
		if vb, err = deterministic.MarshalAppend(vb[:0], &route.VirtualHost{Name: vh.name, Domains: vh.domains}); err != nil {
			return nil, err
		}
		b = appendBytesField(b, fieldRCVirtualHosts, append(vb, vh.parts.routesField()...))
	}
	return deterministic.MarshalAppend(b, &route.RouteConfiguration{ValidateClusters: validateClusters})
}

// assembled is the resource of already-encoded bytes b: the tenant's last
// build's same resource when its bytes are b (validated then already),
// else new, once validate passes.
func (t *translation) assembled(setKey, typeURL, name string, b []byte, validate func() error) *snapshot.Resource {
	key := madeKey(setKey, name, "")
	if prev := t.prev.res[key]; prev != nil && bytes.Equal(prev.Body.GetValue(), b) {
		t.made[key] = prev
		return prev
	}
	if err := validate(); err != nil {
		t.fail(fmt.Errorf("%s %q fails validation: %w", typeURL, name, err))
		return nil
	}
	r := snapshot.FromBytes(name, typeURL, b)
	t.made[key] = r
	return r
}

// fail records the translation's first error (a bug in it); encode
// returns it.
func (t *translation) fail(err error) {
	if t.err == nil {
		t.err = err
	}
}
