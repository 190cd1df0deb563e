package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/xdshard/xdshard/bench/baseline"
	"github.com/xdshard/xdshard/bench/fleet"
	"github.com/xdshard/xdshard/server"
	"github.com/xdshard/xdshard/snapshot/model"
	"github.com/xdshard/xdshard/snapshot/source/memory"
	"github.com/xdshard/xdshard/snapshot/translate"
)

// xdshardTarget is xdshard in-process: the same replica `xdshard serve`
// runs (server.Start), fed by an in-memory source instead of files, on
// 127.0.0.1.
type xdshardTarget struct {
	replica *server.Replica
	source  *memory.Source
}

// startXDShard starts the replica serve runs over objs in memory, tuned
// as bc says (--debounce, --push-slot-until-ack); with sh, one replica
// of a sharded deployment (static peers).
func startXDShard(ctx context.Context, objs []*model.Object, bc Config, sh *Shard) (target, error) {
	src := memory.New(objs)
	cfg := server.Config{Source: src, XDSAddr: "127.0.0.1:0", Debounce: bc.Debounce, MaxDelay: max(time.Second, bc.Debounce), PushSlotUntilAnswered: bc.PushSlotUntilAnswered}
	if sh != nil {
		cfg.ReplicaID, cfg.PeerAddr, cfg.Peers = sh.ReplicaID, sh.PeerAddr, sh.Peers
	}
	r, err := server.Start(ctx, cfg)
	if err != nil {
		return nil, err
	}
	select {
	case <-r.Synced():
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return &xdshardTarget{replica: r, source: src}, nil
}

func (x *xdshardTarget) name() string { return "xdshard" }

// counters reads the bytes xdshard sent and the NACKs it received.
func (x *xdshardTarget) counters() (uint64, uint64) {
	reg := x.replica.Registry()
	return counterSum(reg, "pilot_xds_config_size_bytes_total"), counterSum(reg, "pilot_total_xds_rejects")
}

// stages reads xdshard's push-stage histogram.
func (x *xdshardTarget) stages() map[string][2]float64 { return stageSums(x.replica.Registry()) }
func (x *xdshardTarget) addr() string                  { return x.replica.XDSAddr() }
func (x *xdshardTarget) apply(ctx context.Context, changes []model.Change) error {
	return x.source.Apply(ctx, changes)
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
	t.mesh.Apply(model.Adds(objs))
	for _, tenant := range t.mesh.Tenants() {
		if err := t.build(ctx, tenant); err != nil {
			return nil, err
		}
	}
	return t, nil
}

func (b *baselineTarget) build(ctx context.Context, tenant string) error {
	snap, err := translate.Compose(b.mesh.View(tenant))
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
