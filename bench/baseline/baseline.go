package baseline

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync/atomic"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"

	"github.com/xdshard/xdshard/snapshot"
)

// Mode is how the baseline uses the cache.
type Mode string

const (
	ModePerNode   Mode = "a" // one snapshot per node, one version for all types
	ModePerTenant Mode = "b" // one snapshot per tenant (NodeHash), per-type versions
)

// Server is a go-control-plane ADS server on 127.0.0.1.
type Server struct {
	Mode  Mode
	Addr  string
	cache cache.SnapshotCache
	grpc  *grpc.Server

	bytes, nacks atomic.Uint64 // resource bytes sent, NACKs received
}

// Counters returns the resource bytes sent and the NACKs received so far.
func (s *Server) Counters() (bytes, nacks uint64) { return s.bytes.Load(), s.nacks.Load() }

// callbacks count what was sent and rejected, cheaply: the resources are
// already encoded when the response is handed over, so summing their
// lengths adds no marshaling to the baseline's CPU.
func (s *Server) callbacks() server.CallbackFuncs {
	return server.CallbackFuncs{
		StreamRequestFunc: func(_ int64, r *discovery.DiscoveryRequest) error {
			if r.ErrorDetail != nil {
				s.nacks.Add(1)
			}
			return nil
		},
		StreamDeltaRequestFunc: func(_ int64, r *discovery.DeltaDiscoveryRequest) error {
			if r.ErrorDetail != nil {
				s.nacks.Add(1)
			}
			return nil
		},
		StreamResponseFunc: func(_ context.Context, _ int64, _ *discovery.DiscoveryRequest, r *discovery.DiscoveryResponse) {
			n := 0
			for _, a := range r.Resources {
				n += len(a.GetValue())
			}
			s.bytes.Add(uint64(n))
		},
		StreamDeltaResponseFunc: func(_ int64, _ *discovery.DeltaDiscoveryRequest, r *discovery.DeltaDiscoveryResponse) {
			n := 0
			for _, x := range r.Resources {
				n += len(x.GetResource().GetValue())
			}
			s.bytes.Add(uint64(n))
		},
	}
}

// tenantHash groups nodes by the namespace in their Istio node ID, which
// is the tenant in the generated fleet.
type tenantHash struct{}

func (tenantHash) ID(n *core.Node) string {
	parts := strings.Split(n.GetId(), "~")
	if len(parts) == 4 {
		ns, _, _ := strings.Cut(parts[3], ".")
		return ns
	}
	return n.GetId()
}

// Start serves an empty cache on 127.0.0.1:0 until ctx ends.
func Start(ctx context.Context, mode Mode) (*Server, error) {
	var hash cache.NodeHash = cache.IDHash{}
	if mode == ModePerTenant {
		hash = tenantHash{}
	}
	c := cache.NewSnapshotCache(true, hash, nil)
	g := grpc.NewServer(grpc.MaxConcurrentStreams(1 << 20))
	s := &Server{Mode: mode, cache: c, grpc: g}
	discovery.RegisterAggregatedDiscoveryServiceServer(g, server.NewServer(ctx, c, s.callbacks()))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.Addr = lis.Addr().String()
	go func() { _ = g.Serve(lis) }()
	go func() { <-ctx.Done(); g.Stop() }()
	return s, nil
}

// Set serves a tenant's Envoy view: on the tenant's key (ModePerTenant),
// or on every node of the tenant (ModePerNode). Resources are decoded from
// xdshard's encoding into go-control-plane's types, as a user's
// translation would hand them over.
func (s *Server) Set(ctx context.Context, snap *snapshot.Snapshot, nodes []string) error {
	byType := map[resource.Type][]types.Resource{}
	perType := &cache.Snapshot{}
	for _, t := range []resource.Type{resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteType} {
		set := snap.Set(snapshot.ViewEnvoy, t)
		items := make([]types.Resource, 0, set.Len())
		if set != nil {
			for _, r := range set.Items {
				m, err := r.Body.UnmarshalNew()
				if err != nil {
					return fmt.Errorf("%s: %w", r.Name, err)
				}
				items = append(items, m)
			}
		}
		byType[t] = items
		perType.Resources[cache.GetResponseType(t)] = cache.NewResources(set.GetVersion(), items)
	}
	if s.Mode == ModePerTenant {
		return s.cache.SetSnapshot(ctx, snap.Tenant, perType)
	}
	one, err := cache.NewSnapshot(snap.Version, byType)
	if err != nil {
		return err
	}
	for _, n := range nodes {
		if err := s.cache.SetSnapshot(ctx, n, one); err != nil {
			return err
		}
	}
	return nil
}
