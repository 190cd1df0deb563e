package bench

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/xdshard/xdshard/server"
	"github.com/xdshard/xdshard/sharding"
	"github.com/xdshard/xdshard/snapshot/model"
	"github.com/xdshard/xdshard/snapshot/source/memory"
)

// Shard makes a child one replica of a sharded deployment with static
// peers, as `xdshard serve --replica-id --peer-addr --peers` does. Every
// replica is given the same fleet and every churn event, each with its own
// in-memory source, as N replicas reading one API server.
type Shard struct {
	ReplicaID string
	PeerAddr  string            // HOST:PORT of this replica's peer port
	Peers     []sharding.Member // every replica, this one included
}

// startShardedXDShard is startXDShard as one replica of a sharded
// deployment: it builds the tenants it owns and fetches the others' from
// their owners over the peer port.
func startShardedXDShard(ctx context.Context, objs []*model.Object, debounce time.Duration, sh *Shard) (target, error) {
	src := memory.New(objs)
	r, err := server.Start(ctx, server.Config{
		Source: src, XDSAddr: "127.0.0.1:0", Debounce: debounce, MaxDelay: max(time.Second, debounce),
		ReplicaID: sh.ReplicaID, PeerAddr: sh.PeerAddr, Peers: sh.Peers,
	})
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

// metricReader is an in-process target whose metrics can be read by name.
type metricReader interface{ metric(name string) float64 }

func (x *xdshardTarget) metric(name string) float64 { return metricSum(x.replica.Registry(), name) }

// metricSum adds up every series of a counter or gauge; 0 when there is
// no such metric.
func metricSum(g prometheus.Gatherer, name string) float64 {
	mfs, err := g.Gather()
	if err != nil {
		return 0
	}
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			switch {
			case m.Counter != nil:
				total += m.GetCounter().GetValue()
			case m.Gauge != nil:
				total += m.GetGauge().GetValue()
			case m.Untyped != nil:
				total += m.GetUntyped().GetValue()
			}
		}
	}
	return total
}
