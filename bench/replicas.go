package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/xdshard/xdshard/bench/fleet"
	"github.com/xdshard/xdshard/bench/proxy"
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

// Metrics the sharded run reads from each replica.
const (
	buildsMetric    = "xdshard_tenant_builds_total"
	peerBytesMetric = "xdshard_peer_received_bytes_total"
	ownedMetric     = "xdshard_owned_tenants"
	remoteMetric    = "xdshard_remote_snapshots"
	adoptedMetric   = "xdshard_adopted_tenants"
)

// ShardedResult is a sharded run: N replicas sharing the tenants, the
// proxies spread over them, the same phases as the single-replica run.
type ShardedResult struct {
	Replicas    int              `json:"replicas"`
	Proxies     int              `json:"proxies"`
	InitialSync Stats            `json:"initialSync"`
	SyncCPU     float64          `json:"syncCpuSeconds"` // summed over the replicas
	Events      []ShardedEvent   `json:"events"`
	Per         []ReplicaFigures `json:"perReplica"`
	// RSSBytes and IdleRSSBytes are summed over the replicas: at the end
	// of the events, and before any proxy connected.
	RSSBytes     uint64    `json:"rssBytes"`
	IdleRSSBytes uint64    `json:"idleRssBytes"`
	Unconverged  int       `json:"unconverged"`
	Failover     *Failover `json:"failover,omitempty"`
}

// ShardedEvent is one churn event in the sharded run: its convergence
// over every proxy and CPU over every replica (EventResult), and what it
// cost the deployment.
type ShardedEvent struct {
	EventResult
	Builds    float64 `json:"builds"`    // tenant builds, summed over the replicas
	PeerBytes float64 `json:"peerBytes"` // bytes replicas received from owners
}

// ReplicaFigures is one replica's share of the sharded run.
type ReplicaFigures struct {
	ID           string    `json:"id"`
	Owned        float64   `json:"ownedTenants"`
	Fetched      float64   `json:"fetchedTenants"` // snapshots followed from owners, at the end
	Streams      int       `json:"streams"`        // proxies on it at the end of the events
	SyncCPU      float64   `json:"syncCpuSeconds"`
	EventCPU     []float64 `json:"eventCpuSeconds"`
	Builds       []float64 `json:"builds"`
	PeerBytes    []float64 `json:"peerBytes"`
	RSSBytes     uint64    `json:"rssBytes"`
	IdleRSSBytes uint64    `json:"idleRssBytes"`
	Killed       bool      `json:"killed,omitempty"`
}

// Failover is what followed kill -9 of the last replica.
type Failover struct {
	Replica string `json:"replica"`
	Victims int    `json:"victims"` // proxies it held
	Synced  int    `json:"synced"`  // of those, synced again on another replica
	// Each victim's time from the kill to holding, on a live replica, the
	// current version of every type (that of a proxy of its tenant and
	// protocol on a live replica; polled every 5 ms); All until the last.
	Times Stats         `json:"times"`
	All   time.Duration `json:"all"`
	// Unverified victims had no proxy of their tenant and protocol on a
	// live replica to compare with: synced means a new stream got every
	// type (SotW) or was opened (delta).
	Unverified int `json:"unverified"`
	// Resent: resources delta victims were sent again at a version they
	// already held (0 when the survivor's versions are the owner's).
	Resent int `json:"resent"`
	// After: a one-tenant change applied to the survivors, converging on
	// every proxy of the tenant, failed-over ones included. Its tenant's
	// owner (by the ring of all replicas, the killed one included): when
	// it is the killed replica, the survivors build it themselves once
	// the owner has not answered for a while (adoption).
	AfterOwner  string       `json:"afterOwner"`
	After       ShardedEvent `json:"after"`
	AfterBuilds []float64    `json:"afterBuilds"`    // per replica
	Adopted     float64      `json:"adoptedTenants"` // on the survivors, after the change
}

// replicaChild is one replica of the sharded run, in its own process.
type replicaChild struct {
	*childTarget
	id    string
	alive atomic.Bool
	cpu   float64 // at the last usage reading
	rss   uint64
}

// cluster drives the replicas as one server under test: every event goes
// to every live replica, and CPU and RSS are their sums.
type cluster struct {
	reps  []*replicaChild
	peers []sharding.Member
}

func (c *cluster) name() string { return fmt.Sprintf("xdshard x%d", len(c.reps)) }
func (c *cluster) addr() string { return "" }

func (c *cluster) live() []*replicaChild {
	var out []*replicaChild
	for _, r := range c.reps {
		if r.alive.Load() {
			out = append(out, r)
		}
	}
	return out
}

// applyEvent applies the event to every live replica at once, as N
// replicas watching one API server see the same change.
func (c *cluster) applyEvent(ctx context.Context, index, gen int) error {
	live := c.live()
	errs := make([]error, len(live))
	var wg sync.WaitGroup
	for i, r := range live {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = r.applyEvent(ctx, index, gen) }()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return fmt.Errorf("replica %s: %w", live[i].id, err)
		}
	}
	return nil
}

// usage sums the live replicas' CPU seconds and RSS, and records each
// one's (a killed replica keeps its last reading).
func (c *cluster) usage() (float64, uint64) {
	for _, r := range c.live() {
		r.cpu, r.rss = r.childTarget.usage()
	}
	var cpu float64
	var rss uint64
	for _, r := range c.reps {
		cpu += r.cpu
		if r.alive.Load() {
			rss += r.rss
		}
	}
	return cpu, rss
}

func (c *cluster) stages() map[string][2]float64 {
	out := map[string][2]float64{}
	for _, r := range c.live() {
		for stage, v := range r.childTarget.stages() {
			o := out[stage]
			out[stage] = [2]float64{o[0] + v[0], o[1] + v[1]}
		}
	}
	return out
}

func (c *cluster) counters() (bytes, nacks uint64) {
	for _, r := range c.live() {
		b, n := r.childTarget.counters()
		bytes, nacks = bytes+b, nacks+n
	}
	return bytes, nacks
}

// metrics reads a metric of every replica (0 for a dead one).
func (c *cluster) metrics(name string) []float64 {
	out := make([]float64, len(c.reps))
	for i, r := range c.reps {
		if r.alive.Load() {
			out[i], _ = r.metric(name)
		}
	}
	return out
}

// cpus returns each replica's CPU seconds at the last usage reading.
func (c *cluster) cpus() []float64 {
	out := make([]float64, len(c.reps))
	for i, r := range c.reps {
		out[i] = r.cpu
	}
	return out
}

// settled reads a metric of every replica once its sum has stopped
// moving for quiet (at most 5 s): builds of tenants no proxy watches may
// land after the proxies converged.
func (c *cluster) settled(ctx context.Context, name string, quiet time.Duration) []float64 {
	cur := c.metrics(name)
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); {
		select {
		case <-ctx.Done():
			return cur
		case <-time.After(quiet):
		}
		next := c.metrics(name)
		if sum(next) == sum(cur) {
			return next
		}
		cur = next
	}
	return cur
}

// freePort returns a loopback address nothing listens on now.
func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// home is the replica proxy i connects to first: round-robin, shifted by
// one every round of tenants, so that each tenant's proxies spread over
// every replica even when the tenant count is a multiple of N.
func home(i, tenants, n int) int { return (i + i/tenants) % n }

// RunReplicas runs cfg.Replicas xdshard replicas with static peers, each in
// its own process (cfg.Exe), spreads the proxies over them and measures
// the same phases as Run; with cfg.KillReplica it then kills the last
// replica and measures the failover. The single-replica figures to
// compare with are Run's xdshard result.
func RunReplicas(parent context.Context, cfg Config, progress io.Writer) (*ShardedResult, error) {
	n := cfg.Replicas
	if n < 2 || cfg.Exe == "" {
		return nil, fmt.Errorf("a sharded run needs at least 2 replicas and the binary to run them (Config.Exe)")
	}
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	peers := make([]sharding.Member, n)
	for i := range peers {
		addr, err := freePort()
		if err != nil {
			return nil, err
		}
		peers[i] = sharding.Member{ID: fmt.Sprintf("r%d", i), Addr: addr}
	}
	cl := &cluster{peers: peers}
	res := &ShardedResult{Replicas: n, Proxies: cfg.Proxies}
	for _, m := range peers {
		ccfg := cfg
		ccfg.Shard = &Shard{ReplicaID: m.ID, PeerAddr: m.Addr, Peers: peers}
		c, err := startChild(ctx, cfg.Exe, ccfg, "xdshard")
		if err != nil {
			return nil, fmt.Errorf("replica %s: %w", m.ID, err)
		}
		r := &replicaChild{childTarget: c, id: m.ID}
		r.alive.Store(true)
		cl.reps = append(cl.reps, r)
		res.Per = append(res.Per, ReplicaFigures{ID: m.ID})
	}
	cl.usage()
	for i, r := range cl.reps {
		res.Per[i].IdleRSSBytes = r.rss
		res.IdleRSSBytes += r.rss
	}
	fmt.Fprintf(progress, "xdshard x%d (static peers): %d proxies\n", n, cfg.Proxies)
	proxies, homes, err := cl.connect(ctx, cfg, res, progress)
	if err != nil {
		return res, err
	}
	evs := events(cfg)
	phase := func(run func() (EventResult, error)) error {
		se, d, err := cl.phase(ctx, cfg, run)
		for i := range cl.reps {
			res.Per[i].EventCPU = append(res.Per[i].EventCPU, d.cpu[i])
			res.Per[i].Builds = append(res.Per[i].Builds, d.builds[i])
			res.Per[i].PeerBytes = append(res.Per[i].PeerBytes, d.peer[i])
		}
		res.Events = append(res.Events, se)
		res.Unconverged += se.Affected - se.Converged
		fmt.Fprintf(progress, "  %s %s: %d/%d converged, p99 %s, %g builds\n", cl.name(), se.Name, se.Converged, se.Affected, se.Convergence.P99, se.Builds)
		return err
	}
	for i, ev := range evs[:3] {
		if err := phase(func() (EventResult, error) { return churn(ctx, cfg, cl, proxies, ev, i, i+1) }); err != nil {
			return res, err
		}
	}
	if cfg.Rate > 0 && cfg.RateEvents > 0 {
		if err := phase(func() (EventResult, error) { return sustained(ctx, cfg, cl, proxies) }); err != nil {
			return res, err
		}
	}
	_, res.RSSBytes = cl.usage()
	owned, fetched := cl.metrics(ownedMetric), cl.metrics(remoteMetric)
	for i, r := range cl.reps {
		res.Per[i].RSSBytes, res.Per[i].Owned, res.Per[i].Fetched = r.rss, owned[i], fetched[i]
	}
	for _, h := range homes {
		res.Per[h].Streams++
	}
	if cfg.KillReplica {
		res.Per[n-1].Killed = true
		fo, err := cl.kill(ctx, cfg, proxies, homes, progress)
		res.Failover = fo
		if err != nil {
			return res, err
		}
	}
	return res, nil
}

// connect starts the proxies, proxy i on replica home(i), each redialing
// another live replica once its own is gone, and waits for every one to
// sync.
func (c *cluster) connect(ctx context.Context, cfg Config, res *ShardedResult, progress io.Writer) ([]*proxy.Proxy, []int, error) {
	n := len(c.reps)
	per := max(cfg.StreamsPerConn, 1)
	type key struct {
		addr  string
		group int
	}
	var mu sync.Mutex
	conns := map[key]*grpc.ClientConn{}
	dialer := func(group int) func(string) (*grpc.ClientConn, error) {
		return func(addr string) (*grpc.ClientConn, error) {
			mu.Lock()
			defer mu.Unlock()
			if cc, ok := conns[key{addr, group}]; ok {
				return cc, nil
			}
			cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				return nil, err
			}
			conns[key{addr, group}] = cc
			go func() { <-ctx.Done(); cc.Close() }()
			return cc, nil
		}
	}
	proxies := make([]*proxy.Proxy, cfg.Proxies)
	homes := make([]int, cfg.Proxies)
	c.usage()
	cpu0 := c.cpus()
	start := time.Now()
	for i := range proxies {
		p := proxy.New(fleet.Tenant(i%cfg.Tenants), fmt.Sprintf("pod-%d", i), cfg.Delta || (cfg.Mix && i%2 == 1))
		proxies[i], homes[i] = p, home(i, cfg.Tenants, n)
		own := c.reps[homes[i]]
		pick := func() string {
			if own.alive.Load() {
				return own.addr()
			}
			live := c.live()
			if len(live) == 0 {
				return own.addr()
			}
			return live[i%len(live)].addr()
		}
		go p.Redial(ctx, pick, dialer(i/(per*n)))
	}
	sync := make([]time.Duration, 0, len(proxies))
	deadline := time.After(cfg.Timeout)
	for i, p := range proxies {
		select {
		case <-p.Synced():
			sync = append(sync, p.Latest(proxy.RDS).At.Sub(start))
		case <-deadline:
			return proxies, homes, fmt.Errorf("initial sync: %d of %d proxies synced within %s", i, len(proxies), cfg.Timeout)
		case <-ctx.Done():
			return proxies, homes, ctx.Err()
		}
		if (i+1)%max(len(proxies)/10, 1) == 0 {
			fmt.Fprintf(progress, "\r  synced %d/%d", i+1, len(proxies))
		}
	}
	fmt.Fprintln(progress)
	c.usage()
	for i, cpu := range c.cpus() {
		res.Per[i].SyncCPU = cpu - cpu0[i]
		res.SyncCPU += cpu - cpu0[i]
	}
	res.InitialSync = statsOf(sync)
	return proxies, homes, nil
}

func sum(xs []float64) float64 {
	t := 0.0
	for _, x := range xs {
		t += x
	}
	return t
}

// perReplica is a phase's figures per replica.
type perReplica struct{ cpu, builds, peer []float64 }

// phase runs one churn phase and reads what it cost each replica: CPU
// seconds, tenant builds and peer bytes received.
func (c *cluster) phase(ctx context.Context, cfg Config, run func() (EventResult, error)) (ShardedEvent, perReplica, error) {
	c.usage()
	cpu0 := c.cpus()
	b0, p0 := c.metrics(buildsMetric), c.metrics(peerBytesMetric)
	er, err := run()
	cpu1 := c.cpus() // read by converge when the last proxy converged
	b1 := c.settled(ctx, buildsMetric, max(200*time.Millisecond, 2*cfg.Debounce))
	p1 := c.metrics(peerBytesMetric)
	se := ShardedEvent{EventResult: er}
	d := perReplica{make([]float64, len(c.reps)), make([]float64, len(c.reps)), make([]float64, len(c.reps))}
	for i, r := range c.reps {
		d.cpu[i] = cpu1[i] - cpu0[i]
		if r.alive.Load() {
			d.builds[i], d.peer[i] = b1[i]-b0[i], p1[i]-p0[i]
		}
		se.Builds += d.builds[i]
		se.PeerBytes += d.peer[i]
	}
	return se, d, err
}

// kill kills the last replica (SIGKILL: no goodbye to its proxies or
// peers), waits until every proxy it held is synced again on another
// replica, then applies a one-tenant change to the survivors and waits
// for it to reach every proxy of the tenant.
func (c *cluster) kill(ctx context.Context, cfg Config, proxies []*proxy.Proxy, homes []int, progress io.Writer) (*Failover, error) {
	dead := c.reps[len(c.reps)-1]
	fo := &Failover{Replica: dead.id}
	// A reference per tenant and protocol: a proxy on a live replica.
	type kind struct {
		tenant string
		delta  bool
	}
	refs := map[kind]*proxy.Proxy{}
	var victims []int
	streams0 := make([]int, len(proxies))
	for i, p := range proxies {
		streams0[i], _ = p.Streams()
		if homes[i] == len(c.reps)-1 {
			victims = append(victims, i)
		} else if refs[kind{p.Namespace, p.Delta}] == nil {
			refs[kind{p.Namespace, p.Delta}] = p
		}
	}
	fo.Victims = len(victims)
	fmt.Fprintf(progress, "  killing replica %s (%d proxies)\n", dead.id, len(victims))
	t0 := time.Now()
	dead.alive.Store(false)
	if err := dead.cmd.Process.Kill(); err != nil {
		return fo, fmt.Errorf("killing replica %s: %w", dead.id, err)
	}
	synced := func(i int) bool {
		p := proxies[i]
		if s, _ := p.Streams(); s <= streams0[i] || p.Server() == dead.addr() {
			return false
		}
		ref := refs[kind{p.Namespace, p.Delta}]
		for _, t := range proxy.Types {
			a := p.Latest(t)
			if ref != nil && a.Version != ref.Latest(t).Version {
				return false
			}
			if !p.Delta && !a.At.After(t0) { // a new SotW stream is sent every type
				return false
			}
		}
		return true
	}
	var times []time.Duration
	pending := victims
	deadline := t0.Add(cfg.Timeout)
	for len(pending) > 0 && time.Now().Before(deadline) {
		var still []int
		for _, i := range pending {
			if synced(i) {
				times = append(times, time.Since(t0))
			} else {
				still = append(still, i)
			}
		}
		pending = still
		select {
		case <-ctx.Done():
			return fo, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	fo.Synced, fo.Times = len(times), statsOf(times)
	fo.All = fo.Times.Max
	for _, i := range victims {
		p := proxies[i]
		if refs[kind{p.Namespace, p.Delta}] == nil {
			fo.Unverified++
		}
		if p.Delta {
			_, resent := p.Streams()
			fo.Resent += resent
		}
	}
	fmt.Fprintf(progress, "  %d/%d proxies of %s synced again on another replica, the last after %s\n", fo.Synced, fo.Victims, dead.id, fo.All.Round(time.Millisecond))
	if len(pending) > 0 {
		return fo, fmt.Errorf("failover: %d of %d proxies of the killed replica synced again within %s", fo.Synced, fo.Victims, cfg.Timeout)
	}
	ev := events(cfg)[0]
	if o, ok := sharding.NewRing(c.peers).Owner(fleet.Tenant(0)); ok {
		fo.AfterOwner = o.ID
	}
	se, d, err := c.phase(ctx, cfg, func() (EventResult, error) { return churn(ctx, cfg, c, proxies, ev, 0, 10) })
	se.Name = ev.name + ", after the kill"
	fo.After, fo.AfterBuilds = se, d.builds
	fo.Adopted = sum(c.metrics(adoptedMetric))
	fmt.Fprintf(progress, "  %s: %d/%d converged, p99 %s, %g builds\n", se.Name, se.Converged, se.Affected, se.Convergence.P99, se.Builds)
	return fo, err
}
