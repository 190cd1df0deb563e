package bench

import (
	"context"
	"fmt"
	"github.com/prometheus/client_golang/prometheus"
	"net"
	"time"

	"google.golang.org/grpc"

	"github.com/xdshard/xdshard/bench/baseline"
	"github.com/xdshard/xdshard/bench/fleet"
	"github.com/xdshard/xdshard/server"
	"github.com/xdshard/xdshard/snapshot"
	"github.com/xdshard/xdshard/snapshot/builder"
	"github.com/xdshard/xdshard/snapshot/model"
)

// xdshardTarget is xdshard in-process: mesh, builder (debounced), store
// and ADS server on 127.0.0.1.
type xdshardTarget struct {
	address string
	b       *builder.Builder
	reg     *prometheus.Registry
}

func startXDShard(ctx context.Context, objs []*model.Object, debounce time.Duration) (target, error) {
	mesh, store, reg := model.NewMesh(), snapshot.NewStore(0), prometheus.NewRegistry()
	srv := server.New(store, server.Options{Resolver: mesh, Registry: reg})
	b := builder.New(mesh, store, builder.Options{Build: builder.Compose, Debounce: debounce, MaxDelay: 10 * debounce, Observe: srv.Metrics().Stage})
	mesh.Apply(fleet.Changes(objs))
	if err := b.BuildAll(); err != nil {
		return nil, err
	}
	g := grpc.NewServer(server.GRPCOptions()...)
	srv.Register(g)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	go func() { _ = g.Serve(lis) }()
	go func() { _ = b.Run(ctx) }()
	go func() { <-ctx.Done(); srv.Close(); g.Stop() }()
	return &xdshardTarget{address: lis.Addr().String(), b: b, reg: reg}, nil
}

func (x *xdshardTarget) name() string { return "xdshard" }

// counters reads the bytes xdshard sent and the NACKs it received.
func (x *xdshardTarget) counters() (uint64, uint64) {
	return counterSum(x.reg, "pilot_xds_config_size_bytes_total"), counterSum(x.reg, "pilot_total_xds_rejects")
}

// stages reads xdshard's push-stage histogram.
func (x *xdshardTarget) stages() map[string][2]float64 { return stageSums(x.reg) }
func (x *xdshardTarget) addr() string                  { return x.address }
func (x *xdshardTarget) apply(_ context.Context, changes []model.Change) error {
	x.b.Apply(changes)
	return nil
}

// baselineTarget is go-control-plane fed the same way a user's control
// plane would: on a change, rebuild the affected tenants and SetSnapshot
// (per node in ModePerNode).
type baselineTarget struct {
	srv   *baseline.Server
	mesh  *model.Mesh
	nodes map[string][]string // tenant -> node IDs
}

func startBaseline(ctx context.Context, objs []*model.Object, mode baseline.Mode, cfg Config) (target, error) {
	srv, err := baseline.Start(ctx, mode)
	if err != nil {
		return nil, err
	}
	t := &baselineTarget{srv: srv, mesh: model.NewMesh(), nodes: map[string][]string{}}
	for i := 0; i < cfg.Proxies; i++ {
		ns := fleet.Tenant(i % cfg.Tenants)
		t.nodes[ns] = append(t.nodes[ns], fmt.Sprintf("sidecar~10.0.0.1~pod-%d.%s~%s.svc.cluster.local", i, ns, ns))
	}
	t.mesh.Apply(fleet.Changes(objs))
	for _, tenant := range t.mesh.Tenants() {
		if err := t.build(ctx, tenant); err != nil {
			return nil, err
		}
	}
	return t, nil
}

func (b *baselineTarget) build(ctx context.Context, tenant string) error {
	snap, err := builder.Compose(b.mesh.View(tenant))
	if err != nil {
		return err
	}
	return b.srv.Set(ctx, snap, b.nodes[tenant])
}

func (b *baselineTarget) counters() (uint64, uint64) { return b.srv.Counters() }

func (b *baselineTarget) name() string { return "go-control-plane (" + string(b.srv.Mode) + ")" }
func (b *baselineTarget) addr() string { return b.srv.Addr }
func (b *baselineTarget) apply(ctx context.Context, changes []model.Change) error {
	for tenant := range b.mesh.Apply(changes) {
		if err := b.build(ctx, tenant); err != nil {
			return err
		}
	}
	return nil
}
