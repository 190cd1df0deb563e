package xds

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	statusv3 "github.com/envoyproxy/go-control-plane/envoy/service/status/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/xdshard/xdshard/snapshot"

	"github.com/xdshard/xdshard/identity"
)

// istioctl's debug requests (`istioctl proxy-status --xds-address`), as
// ISTIO-WIRE.md describes them: a SotW stream whose node says GENERATOR
// "event", each request answered once. They are request/response: never a
// subscription, never ACK-gated, and the debug client is never listed as a
// proxy.
const (
	// GeneratorEvent marks istioctl's debug client.
	GeneratorEvent = "event"
	// SynczType lists every connected proxy's sync state.
	SynczType = "istio.io/debug/syncz"
	// ConfigDumpType is what a proxy (named "pod.namespace" in the
	// request's resource names) should hold, as an Envoy admin config dump.
	ConfigDumpType = "istio.io/debug/config_dump"
	// DebugType is `istioctl x internal-debug PAGE`: the resource name is
	// a debug page (syncz, tenantz, statusz, history?tenant=T, ...), and
	// the answer its body, as Any{type_url: DebugType, value: body}.
	DebugType = "istio.io/debug"
	// notConnected is istiod's answer for a proxy it does not hold; istioctl
	// then asks the next instance.
	notConnected = "Proxy not connected to this Pilot instance. It may be connected to another instance."
	// systemNamespace sees every proxy; a caller of another namespace
	// sees only its own namespace's, as istiod does.
	systemNamespace = "istio-system"
)

// debugReaders may read the istio.io/debug pages with a proven identity.
func (s *Server) debugReaders() identity.AllowList {
	if len(s.opts.Access.DebugReaders) > 0 {
		return s.opts.Access.DebugReaders
	}
	return identity.AllowList{systemNamespace + "/*"}
}

// streamDebug answers istioctl's requests until the stream ends.
//
// caller is the namespace the caller may see the proxies of (istio-system:
// all); verified says it was proven (TLS or a token), not claimed.
func (s *Server) streamDebug(stream discovery.AggregatedDiscoveryService_StreamAggregatedResourcesServer, first *discovery.DiscoveryRequest, caller string, id *identity.Identity) error {
	if err := s.checkNodeSize(first.GetNode()); err != nil {
		return err
	}
	rate := newBucket(s.limits)
	var seq uint64
	for req := first; ; {
		if !rate.take(time.Now()) {
			return s.refused.refuse("rate_limited", codes.ResourceExhausted, "more than %.0f debug requests per second", s.limits.Rate)
		}
		resp, err := s.debugResponse(req, caller, id)
		if err != nil {
			return err
		}
		seq++
		resp.Nonce = strconv.FormatUint(seq, 10)
		if err := stream.Send(resp); err != nil {
			return err
		}
		next, err := stream.Recv()
		if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled {
			return nil
		}
		if err != nil {
			return err
		}
		req = next
	}
}

func (s *Server) debugResponse(req *discovery.DiscoveryRequest, caller string, id *identity.Identity) (*discovery.DiscoveryResponse, error) {
	verified := id != nil
	resp := &discovery.DiscoveryResponse{TypeUrl: req.GetTypeUrl(), VersionInfo: strconv.FormatInt(time.Now().UnixNano(), 10), ControlPlane: s.controlPlane()}
	switch req.GetTypeUrl() {
	case SynczType:
		resp.Resources = s.syncz(caller)
		return resp, nil
	case ConfigDumpType:
		resp.Resources = s.configDump(req.GetResourceNames(), caller)
		return resp, nil
	case DebugType:
		// The pages show every tenant: a proven caller must be one of
		// the admin port's readers (--admin-readers, default the system
		// namespace's identities), as on the admin port; a claimed one is
		// trusted only where claims are (plaintext on loopback, or
		// --insecure).
		if verified && !s.debugReaders().Allows(*id) || s.opts.DebugPages == nil {
			return nil, s.refused.refuse("debug_not_allowed", codes.PermissionDenied,
				"istio.io/debug pages show every tenant: only the admin port's readers (%v, serve --admin-readers) may read them", s.debugReaders())
		}
		if len(req.GetResourceNames()) > 8 {
			return nil, s.refused.refuse("too_many_names", codes.InvalidArgument, "at most 8 debug pages per request")
		}
		for _, page := range req.GetResourceNames() {
			body, err := s.opts.DebugPages(page)
			if err != nil {
				body = []byte(err.Error())
			}
			resp.Resources = append(resp.Resources, &anypb.Any{TypeUrl: DebugType, Value: body})
		}
		return resp, nil
	}
	return nil, s.refused.refuse("bad_type_url", codes.InvalidArgument,
		"debug type %.128q is not served; xdshard answers %s, %s and %s (istioctl proxy-status, istioctl x internal-debug)", req.GetTypeUrl(), SynczType, ConfigDumpType, DebugType)
}

// configDump is the config the proxy named by names[0] ("pod.namespace",
// matched in its node ID, as istiod matches it) is served: its clusters,
// listeners and routes as Envoy admin dumps. A proxy not connected here,
// or not the caller's to see, gets istiod's "not connected" answer.
func (s *Server) configDump(names []string, caller string) []*anypb.Any {
	var c *conn
	if len(names) == 1 && names[0] != "" {
		s.mu.Lock()
		for x := range s.conns {
			if x.view != snapshot.ViewMCP && x.view != snapshot.ViewPeer && strings.Contains(x.node.GetId(), names[0]) &&
				(caller == systemNamespace || x.namespace == caller) && (c == nil || x.id > c.id) {
				c = x // the most recent connection of that proxy
			}
		}
		s.mu.Unlock()
	}
	snap := (*snapshot.Snapshot)(nil)
	if c != nil {
		snap = s.serving(c)
	}
	if snap == nil {
		return []*anypb.Any{{Value: []byte(notConnected)}}
	}
	clusters := &adminv3.ClustersConfigDump{}
	for _, r := range snap.Set(c.view, snapshot.ClusterType).GetItems() {
		clusters.DynamicActiveClusters = append(clusters.DynamicActiveClusters, &adminv3.ClustersConfigDump_DynamicCluster{VersionInfo: r.Version, Cluster: r.Body})
	}
	listeners := &adminv3.ListenersConfigDump{}
	for _, r := range snap.Set(c.view, snapshot.ListenerType).GetItems() {
		listeners.DynamicListeners = append(listeners.DynamicListeners, &adminv3.ListenersConfigDump_DynamicListener{Name: r.Name,
			ActiveState: &adminv3.ListenersConfigDump_DynamicListenerState{VersionInfo: r.Version, Listener: r.Body}})
	}
	routes := &adminv3.RoutesConfigDump{}
	for _, r := range snap.Set(c.view, snapshot.RouteType).GetItems() {
		routes.DynamicRouteConfigs = append(routes.DynamicRouteConfigs, &adminv3.RoutesConfigDump_DynamicRouteConfig{VersionInfo: r.Version, RouteConfig: r.Body})
	}
	var out []*anypb.Any
	for _, m := range []proto.Message{clusters, listeners, routes} {
		if a, err := snapshot.Any(m); err == nil {
			out = append(out, a)
		}
	}
	return out
}

// controlPlane says who answers, as istioctl prints it in its ISTIOD
// column: istiod's JSON identifier with this replica's name.
func (s *Server) controlPlane() *core.ControlPlane {
	id, _ := json.Marshal(map[string]any{"Component": "istiod", "ID": s.opts.Identity, "Info": map[string]string{"version": "xdshard"}})
	return &core.ControlPlane{Identifier: string(id)}
}

// syncz is one ClientConfig per connected proxy that caller may see.
func (s *Server) syncz(caller string) []*anypb.Any {
	s.mu.Lock()
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		if c.view == snapshot.ViewMCP || c.view == snapshot.ViewPeer || caller != systemNamespace && c.namespace != caller {
			continue
		}
		conns = append(conns, c)
	}
	s.mu.Unlock()
	slices.SortFunc(conns, func(a, b *conn) int { return int(a.id) - int(b.id) })
	var out []*anypb.Any
	for _, c := range conns {
		cs := c.status()
		// As istiod: the proxy ID (pod.namespace) and three fields of its
		// metadata, not all a proxy sent about itself.
		md := map[string]any{}
		for _, k := range []string{"CLUSTER_ID", "NAMESPACE", "ISTIO_VERSION"} {
			if v := metaString(c.node, k); v != "" {
				md[k] = v
			}
		}
		if _, ok := md["NAMESPACE"]; !ok {
			md["NAMESPACE"] = c.namespace
		}
		meta, _ := structpb.NewStruct(md)
		cc := &statusv3.ClientConfig{Node: &core.Node{Id: ProxyName(c.node.GetId()), Metadata: meta}}
		for _, t := range slices.Sorted(maps.Keys(cs.Types)) {
			ts := cs.Types[t]
			g := &statusv3.ClientConfig_GenericXdsConfig{TypeUrl: t, VersionInfo: ts.SentVersion, ConfigStatus: configStatus(ts.Sync)}
			if !ts.SentAt.IsZero() {
				g.LastUpdated = timestamppb.New(ts.SentAt)
			}
			if ts.LastNACK != nil && ts.Sync == "ERROR" {
				g.ErrorState = &adminv3.UpdateFailureState{Details: ts.LastNACK.Message, VersionInfo: ts.LastNACK.Version, LastUpdateAttempt: timestamppb.New(ts.LastNACK.At)}
			}
			cc.GenericXdsConfigs = append(cc.GenericXdsConfigs, g)
		}
		if a, err := snapshot.Any(cc); err == nil {
			out = append(out, a)
		}
	}
	return out
}

func configStatus(sync string) statusv3.ConfigStatus {
	switch sync {
	case "SYNCED":
		return statusv3.ConfigStatus_SYNCED
	case "STALE":
		return statusv3.ConfigStatus_STALE
	case "ERROR":
		return statusv3.ConfigStatus_ERROR
	case "NOT_SENT":
		return statusv3.ConfigStatus_NOT_SENT
	}
	return statusv3.ConfigStatus_UNKNOWN
}

// ConfigDump is what the proxy named (pod.namespace, or any part of its
// node ID) is served, as Envoy's admin config dump; types narrows it to
// some of cds, eds, lds, rds.
func (s *Server) ConfigDump(proxy string, types ...string) (*adminv3.ConfigDump, error) {
	anys := s.configDump([]string{proxy}, systemNamespace)
	if len(anys) == 1 && string(anys[0].GetValue()) == notConnected {
		return nil, fmt.Errorf("proxy %q is not connected to this replica (see /debug/syncz; with sharding, ask the replica it is on)", proxy)
	}
	want := map[string]string{"cds": "ClustersConfigDump", "eds": "EndpointsConfigDump", "lds": "ListenersConfigDump", "rds": "RoutesConfigDump"}
	dump := &adminv3.ConfigDump{}
	for _, a := range anys {
		keep := len(types) == 0
		for _, t := range types {
			if strings.HasSuffix(a.GetTypeUrl(), want[t]) {
				keep = true
			}
		}
		if keep {
			dump.Configs = append(dump.Configs, a)
		}
	}
	return dump, nil
}
