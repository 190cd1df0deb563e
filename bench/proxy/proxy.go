package proxy

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// Type URLs a sidecar subscribes to.
const (
	CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
	LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
	RDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
)

// Types in Envoy's subscription order.
var Types = []string{CDS, EDS, LDS, RDS}

// Proxy is one simulated sidecar.
type Proxy struct {
	Namespace string
	Delta     bool
	// NACK makes the proxy reject every response (as an Envoy given config
	// it cannot load); SlowRead delays reading each response, as a proxy
	// on a starved node. Neither may hold other proxies back.
	NACK     bool
	SlowRead time.Duration
	// Silent, once set, makes the proxy answer no response at all (no ACK,
	// no NACK), as a wedged Envoy: it still reads and records them.
	Silent atomic.Bool
	// NotReading makes the proxy never read its stream and ask again for
	// its clusters every 20 ms with an empty nonce (a whole new response
	// each time, were it taken), as a wedged client or an attacker: it
	// never syncs. MadeUpTypes makes it also subscribe to fourteen type
	// URLs xdshard does not serve, 1,000 names each.
	NotReading, MadeUpTypes bool
	// Misbehaving marks a NACKing or slow proxy, left out of the figures.
	Misbehaving bool

	node *core.Node
	id   string

	mu       sync.Mutex
	received map[string]Arrival // type -> latest response
	synced   chan struct{}
	once     sync.Once
	nacks    int
	// held is what a delta proxy holds, type -> name -> version: named
	// as initial_resource_versions when it opens a stream again, as Envoy
	// does after it lost its control plane.
	held map[string]map[string]string
	// subscribed is what a delta proxy subscribed to, type -> names, so a
	// new stream subscribes again to all of it (as Envoy does), also to
	// names nothing was received for yet.
	subscribed map[string]map[string]bool
	// sotwNames and sotwAcked are a SotW proxy's named subscriptions and
	// the last version it accepted of each type: a new stream asks for
	// the same names and names those versions, as Envoy and grpc-go do.
	sotwNames map[string][]string
	sotwAcked map[string]string
	// streams counts the streams opened; resent counts the resources
	// received on every stream after the first that the proxy already
	// held at that version.
	streams, resent int
	server          string // the address of the current stream
	// seen holds every version received per type; backwards counts
	// responses that brought back a version replaced earlier, empty the
	// CDS or LDS responses with no resource at all, and foreign the
	// clusters of a namespace neither the proxy's nor istio-system.
	seen                    map[string]map[string]bool
	backwards, empty, alien int
}

// Arrival is when a type's latest response came, and its version.
type Arrival struct {
	Version string
	At      time.Time
	Count   int // responses of this type so far
}

// New returns a sidecar of namespace ns, pod pod.
func New(ns, pod string, delta bool) *Proxy {
	md, _ := structpb.NewStruct(map[string]any{"NAMESPACE": ns, "ISTIO_VERSION": "1.30.0"})
	return &Proxy{
		Namespace: ns, Delta: delta,
		node:     &core.Node{Id: fmt.Sprintf("sidecar~10.0.0.1~%s.%s~%s.svc.cluster.local", pod, ns, ns), Metadata: md},
		id:       fmt.Sprintf("sidecar~10.0.0.1~%s.%s~%s.svc.cluster.local", pod, ns, ns),
		received: map[string]Arrival{}, synced: make(chan struct{}), held: map[string]map[string]string{},
	}
}

// SetLabels gives the proxy pod labels, sent as node metadata LABELS as
// istio-agent sends them. Call it before Run.
func (p *Proxy) SetLabels(labels map[string]string) {
	fields := map[string]any{}
	for k, v := range labels {
		fields[k] = v
	}
	l, _ := structpb.NewStruct(fields)
	p.node.Metadata.Fields["LABELS"] = structpb.NewStructValue(l)
}

// Streams counts the streams the proxy opened, and Resent the resources
// it was sent again on a later stream at a version it already held (a
// delta proxy failing over to a replica with identical versions gets
// none).
func (p *Proxy) Streams() (streams, resent int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.streams, p.resent
}

// Server is the address of the proxy's current or last stream.
func (p *Proxy) Server() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.server
}

// Redial keeps the proxy connected as Envoy does behind a Service: it
// streams to pick() and, when that stream ends, picks again after a short
// pause, until ctx ends. dial opens (or reuses) a connection to an address.
func (p *Proxy) Redial(ctx context.Context, pick func() string, dial func(addr string) (*grpc.ClientConn, error)) {
	for ctx.Err() == nil {
		addr := pick()
		if conn, err := dial(addr); err == nil {
			p.mu.Lock()
			p.server = addr
			p.mu.Unlock()
			_ = p.Run(ctx, conn)
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Synced is closed once every type has had a response.
func (p *Proxy) Synced() <-chan struct{} { return p.synced }

// Latest returns the latest response of typeURL.
func (p *Proxy) Latest(typeURL string) Arrival {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.received[typeURL]
}

// Anomalies counts what a proxy must never see: a version coming back
// after it was replaced, an empty CDS or LDS state of the world, and a
// cluster of another tenant's namespace.
func (p *Proxy) Anomalies() (backwards, empty, foreign int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.backwards, p.empty, p.alien
}

// Saw says whether the proxy ever received version of typeURL.
func (p *Proxy) Saw(typeURL, version string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.seen[typeURL][version]
}

// Seen lists every version of typeURL the proxy received, sorted.
func (p *Proxy) Seen(typeURL string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Sorted(maps.Keys(p.seen[typeURL]))
}

// NodeID is the proxy's node ID.
func (p *Proxy) NodeID() string { return p.id }

// inspect checks one state-of-the-world response (or a delta response
// carrying a type's first resources) for empty and foreign config.
func (p *Proxy) inspect(typeURL string, rs []*anypb.Any, whole bool) {
	if typeURL != CDS && typeURL != LDS {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if whole && len(rs) == 0 {
		p.empty++
	}
	if typeURL != CDS {
		return
	}
	for _, a := range rs {
		name, _ := clusterName(a.Value)
		host, ok := strings.CutSuffix(name[strings.LastIndex(name, "|")+1:], ".svc.cluster.local")
		if !ok {
			continue
		}
		if ns := host[strings.LastIndex(host, ".")+1:]; ns != p.Namespace && ns != "istio-system" {
			p.alien++
		}
	}
}

func (p *Proxy) record(typeURL, version string) {
	p.mu.Lock()
	if p.seen == nil {
		p.seen = map[string]map[string]bool{}
	}
	if p.seen[typeURL] == nil {
		p.seen[typeURL] = map[string]bool{}
	}
	if cur := p.received[typeURL].Version; version != cur && p.seen[typeURL][version] {
		p.backwards++
	}
	p.seen[typeURL][version] = true
	a := p.received[typeURL]
	p.received[typeURL] = Arrival{Version: version, At: time.Now(), Count: a.Count + 1}
	done := len(p.received) == len(Types)
	p.mu.Unlock()
	if done {
		p.once.Do(func() { close(p.synced) })
	}
}

// Run streams until ctx ends or the stream fails.
func (p *Proxy) Run(ctx context.Context, conn *grpc.ClientConn) error {
	p.mu.Lock()
	p.streams++
	p.mu.Unlock()
	client := discovery.NewAggregatedDiscoveryServiceClient(conn)
	if p.Delta {
		s, err := client.DeltaAggregatedResources(ctx)
		if err != nil {
			return err
		}
		return p.runDelta(s)
	}
	s, err := client.StreamAggregatedResources(ctx)
	if err != nil {
		return err
	}
	return p.runSotW(s)
}

func (p *Proxy) runSotW(s discovery.AggregatedDiscoveryService_StreamAggregatedResourcesClient) error {
	p.mu.Lock()
	if p.sotwNames == nil {
		p.sotwNames, p.sotwAcked = map[string][]string{}, map[string]string{}
	}
	again := p.streams > 1
	subs, held := maps.Clone(p.sotwNames), maps.Clone(p.sotwAcked)
	p.mu.Unlock()
	node := p.node
	send := func(t, version, nonce string, names []string) error {
		req := &discovery.DiscoveryRequest{TypeUrl: t, VersionInfo: version, ResponseNonce: nonce, ResourceNames: names}
		req.Node, node = node, nil
		return s.Send(req)
	}
	// A new stream names the versions accepted on the last one, and asks
	// again for the names subscribed then.
	if err := send(CDS, held[CDS], "", nil); err != nil {
		return err
	}
	if err := send(LDS, held[LDS], "", nil); err != nil {
		return err
	}
	for _, t := range []string{EDS, RDS} {
		if len(subs[t]) > 0 {
			if err := send(t, held[t], "", subs[t]); err != nil {
				return err
			}
		}
	}
	if p.MadeUpTypes {
		names := make([]string, 1000)
		for i := range names {
			names[i] = fmt.Sprintf("made-up-%04d", i)
		}
		for i := 0; i < 14; i++ {
			if err := send(fmt.Sprintf("example.com/made.up.Type%d", i), "", "", names); err != nil {
				return err
			}
		}
	}
	if p.NotReading {
		// Bounded: until the stream ends or an hour of asking.
		for round := 0; round < 180000; round++ {
			select {
			case <-s.Context().Done():
				return s.Context().Err()
			case <-time.After(20 * time.Millisecond):
			}
			if err := send(CDS, "", "", nil); err != nil {
				return err
			}
		}
		return nil
	}
	for {
		r, err := s.Recv()
		if err != nil {
			return err
		}
		time.Sleep(p.SlowRead)
		p.inspect(r.TypeUrl, r.Resources, true)
		p.record(r.TypeUrl, r.VersionInfo)
		if again && (r.TypeUrl == CDS || r.TypeUrl == LDS) && r.VersionInfo == held[r.TypeUrl] {
			p.mu.Lock()
			p.resent += len(r.Resources) // the whole state it holds, sent again
			p.mu.Unlock()
		}
		if p.Silent.Load() {
			continue
		}
		if p.NACK {
			if err := s.Send(&discovery.DiscoveryRequest{TypeUrl: r.TypeUrl, ResponseNonce: r.Nonce, ResourceNames: subs[r.TypeUrl],
				ErrorDetail: &status.Status{Code: 3, Message: "simulated rejection"}}); err != nil {
				return err
			}
		} else if err := send(r.TypeUrl, r.VersionInfo, r.Nonce, subs[r.TypeUrl]); err != nil {
			return err
		} else {
			p.mu.Lock()
			p.sotwAcked[r.TypeUrl] = r.VersionInfo
			p.mu.Unlock()
		}
		dep, names := dependents(r.TypeUrl, r.Resources)
		if dep != "" && !slices.Equal(names, subs[dep]) {
			subs[dep] = names
			p.mu.Lock()
			p.sotwNames[dep] = names
			p.mu.Unlock()
			if err := send(dep, "", "", names); err != nil {
				return err
			}
		}
	}
}

func (p *Proxy) runDelta(s discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesClient) error {
	subs := map[string]map[string]bool{EDS: {}, RDS: {}}
	first := true
	send := func(req *discovery.DeltaDiscoveryRequest) error {
		if first {
			req.Node, first = p.node, false
		}
		return s.Send(req)
	}
	// Opened again: name what is held, and subscribe again to the names
	// the last stream subscribed to, as Envoy does.
	p.mu.Lock()
	again := p.streams > 1
	initial := map[string]map[string]string{}
	for t, held := range p.held {
		initial[t] = maps.Clone(held)
		if subs[t] != nil {
			for n := range held {
				subs[t][n] = true
			}
		}
	}
	for t, names := range p.subscribed {
		for n := range names {
			subs[t][n] = true
		}
	}
	p.mu.Unlock()
	for _, t := range Types {
		req := &discovery.DeltaDiscoveryRequest{TypeUrl: t, InitialResourceVersions: initial[t]}
		if subs[t] != nil {
			if len(subs[t]) == 0 {
				continue // EDS and RDS follow CDS and LDS
			}
			req.ResourceNamesSubscribe = slices.Sorted(maps.Keys(subs[t]))
		}
		if err := send(req); err != nil {
			return err
		}
	}
	for {
		r, err := s.Recv()
		if err != nil {
			return err
		}
		time.Sleep(p.SlowRead)
		p.hold(r, again)
		p.record(r.TypeUrl, r.SystemVersionInfo)
		if p.Silent.Load() {
			continue
		}
		ack := &discovery.DeltaDiscoveryRequest{TypeUrl: r.TypeUrl, ResponseNonce: r.Nonce}
		if p.NACK {
			ack.ErrorDetail = &status.Status{Code: 3, Message: "simulated rejection"}
		}
		if err := send(ack); err != nil {
			return err
		}
		anys := make([]*anypb.Any, 0, len(r.Resources))
		for _, x := range r.Resources {
			anys = append(anys, x.Resource)
		}
		p.inspect(r.TypeUrl, anys, false)
		dep, names := dependents(r.TypeUrl, anys)
		var add []string
		for _, n := range names {
			if dep != "" && !subs[dep][n] {
				subs[dep][n] = true
				add = append(add, n)
			}
		}
		if len(add) > 0 {
			p.mu.Lock()
			if p.subscribed == nil {
				p.subscribed = map[string]map[string]bool{}
			}
			if p.subscribed[dep] == nil {
				p.subscribed[dep] = map[string]bool{}
			}
			for _, n := range add {
				p.subscribed[dep][n] = true
			}
			p.mu.Unlock()
			if err := send(&discovery.DeltaDiscoveryRequest{TypeUrl: dep, ResourceNamesSubscribe: add}); err != nil {
				return err
			}
		}
	}
}

// hold records a delta response's resources, counting those already held
// at the same version when the stream is not the proxy's first.
func (p *Proxy) hold(r *discovery.DeltaDiscoveryResponse, again bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	held := p.held[r.TypeUrl]
	if held == nil {
		held = map[string]string{}
		p.held[r.TypeUrl] = held
	}
	for _, x := range r.Resources {
		if again && held[x.Name] == x.Version {
			p.resent++
		}
		held[x.Name] = x.Version
	}
	for _, n := range r.RemovedResources {
		delete(held, n)
	}
}

// dependents returns the type a response leads Envoy to subscribe to, and
// the names: the EDS clusters of a CDS response, the route configurations
// of an LDS response.
func dependents(t string, rs []*anypb.Any) (string, []string) {
	switch t {
	case CDS:
		var names []string
		for _, a := range rs {
			if n, eds := clusterName(a.Value); eds {
				names = append(names, n)
			}
		}
		slices.Sort(names)
		return EDS, names
	case LDS:
		set := map[string]bool{}
		for _, a := range rs {
			for _, n := range routeNames(a) {
				set[n] = true
			}
		}
		return RDS, slices.Sorted(maps.Keys(set))
	}
	return "", nil
}

// clusterName reads a Cluster's name (field 1) and whether it is an EDS
// cluster (field 2, type = 3), without decoding the rest.
func clusterName(b []byte) (string, bool) {
	name, eds := "", false
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return name, eds
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.BytesType:
			v, m := protowire.ConsumeBytes(b)
			name, b = string(v), b[max(m, 0):]
			continue
		case num == 2 && typ == protowire.VarintType:
			v, m := protowire.ConsumeVarint(b)
			eds, b = v == 3, b[max(m, 0):]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return name, eds
		}
		b = b[m:]
	}
	return name, eds
}

func routeNames(a *anypb.Any) []string {
	l := &listener.Listener{}
	if err := a.UnmarshalTo(l); err != nil {
		return nil
	}
	var out []string
	for _, fc := range l.FilterChains {
		for _, f := range fc.Filters {
			m := &hcm.HttpConnectionManager{}
			if f.GetTypedConfig().UnmarshalTo(m) == nil && m.GetRds() != nil {
				out = append(out, m.GetRds().GetRouteConfigName())
			}
		}
	}
	return out
}
