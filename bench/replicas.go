package bench

import (
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/xdshard/xdshard/bench/fleet"
	"github.com/xdshard/xdshard/bench/proxy"
	"github.com/xdshard/xdshard/sharding"
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

// metricReader is an in-process target whose metrics can be read by name.
type metricReader interface{ metric(name string) float64 }

func (x *xdshardTarget) metric(name string) float64 { return metricSum(x.replica.Registry(), name) }

// metricSum adds up every series of a counter or gauge; 0 when there is
// no such metric. NAME{LABEL=VALUE} adds up only the series with that
// label value.
func metricSum(g prometheus.Gatherer, name string) float64 {
	mfs, err := g.Gather()
	if err != nil {
		return 0
	}
	name, sel, _ := strings.Cut(strings.TrimSuffix(name, "}"), "{")
	label, value, _ := strings.Cut(sel, "=")
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label != "" && !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool { return l.GetName() == label && l.GetValue() == value }) {
				continue
			}
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
	sentBytesMetric = "pilot_xds_config_size_bytes_total"
)

// ShardedResult is a sharded run: N replicas sharing the tenants, the
// proxies spread over them, the same phases as the single-replica run.
type ShardedResult struct {
	Replicas int `json:"replicas"`
	// Symmetric: every replica builds every tenant (no peers).
	Symmetric   bool    `json:"symmetric,omitempty"`
	Proxies     int     `json:"proxies"`
	InitialSync Stats   `json:"initialSync"`
	SyncCPU     float64 `json:"syncCpuSeconds"` // summed over the replicas
	// StartCPU is the replicas' CPU from their start until they were
	// ready, before any proxy: reading the mesh and building what each
	// builds (a symmetric replica, every tenant).
	StartCPU float64          `json:"startCpuSeconds"`
	Events   []ShardedEvent   `json:"events"`
	Per      []ReplicaFigures `json:"perReplica"`
	// RSSBytes and IdleRSSBytes are summed over the replicas: at the end
	// of the events, and before any proxy connected.
	RSSBytes     uint64    `json:"rssBytes"`
	IdleRSSBytes uint64    `json:"idleRssBytes"`
	Unconverged  int       `json:"unconverged"`
	Failover     *Failover `json:"failover,omitempty"`
	// What no proxy may see, counted by the proxies over the whole run
	// (the kill included): a version coming back after it was replaced,
	// an empty CDS or LDS state of the world, another tenant's cluster.
	Backwards int `json:"backwards"`
	Empty     int `json:"empty"`
	Foreign   int `json:"foreign"`
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
	// Resent: resources victims were sent again at a version they
	// already held: delta proxies any, SotW proxies of CDS and LDS (the
	// wildcard types; their named EDS and RDS are sent whole on a new
	// stream). 0 when the survivor's versions are the owner's.
	Resent int `json:"resent"`
	// SentBytes is what the survivors sent, by type, from the kill until
	// the victims synced (their other clients' pushes included: there
	// are none then, but for the victims').
	SentBytes map[string]float64 `json:"sentBytes"`
	// Adoption: the survivors build the killed replica's tenants they
	// have clients of once it has not answered for a while. Adopted is
	// how many (summed over the survivors), AdoptedAt when the count
	// last rose, AdoptionBuilds the builds from the kill until it
	// settled (no rise for a second; 10 s at most).
	Adopted        float64       `json:"adoptedTenants"`
	AdoptedAt      time.Duration `json:"adoptedAt"`
	AdoptionBuilds float64       `json:"adoptionBuilds"`
	// After: one-tenant changes applied to the survivors then, each
	// converging on every proxy of its tenant, failed-over ones included:
	// in tenant 0, and in a tenant the killed replica owned.
	After []AfterKill `json:"after"`
}

// AfterKill is a change after the kill: its tenant's owner by the ring
// of every replica, the killed one included (static peers never drop it),
// and what it cost each replica.
type AfterKill struct {
	ShardedEvent
	Owner         string    `json:"owner"`
	ReplicaBuilds []float64 `json:"perReplicaBuilds"`
	ReplicaCPU    []float64 `json:"perReplicaCpuSeconds"`
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
	reps      []*replicaChild
	peers     []sharding.Member
	symmetric bool // every replica builds every tenant
	events    int  // phases run, numbering the CPU profiles
	// capture: the next usage reading is kept in captured, so a phase's
	// per-replica CPU starts where its total (read by churn) starts.
	capture  bool
	captured []float64
}

func (c *cluster) name() string {
	if c.symmetric {
		return fmt.Sprintf("xdshard x%d symmetric", len(c.reps))
	}
	return fmt.Sprintf("xdshard x%d", len(c.reps))
}
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
	if c.capture {
		c.capture, c.captured = false, c.cpus()
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

// home is the replica proxy i connects to first. Proxy i is of tenant
// i%tenants; its k-th proxy (k = i/tenants) goes to replica
// (tenant+k)%n: round-robin over the replicas both across tenants and
// within each, so every tenant's proxies spread over every replica
// whatever the tenant count (plain i%n would put all of a tenant's
// proxies on one replica when n divides the tenant count).
func home(i, tenants, n int) int { return (i%tenants + i/tenants) % n }

// RunReplicas runs cfg.Replicas xdshard replicas with static peers, each in
// its own process (cfg.Exe), spreads the proxies over them and measures
// the same phases as Run; with cfg.KillReplica it then kills the last
// replica and measures the failover. The single-replica figures to
// compare with are Run's xdshard result.
func RunReplicas(parent context.Context, cfg Config, progress io.Writer) (*ShardedResult, error) {
	return runDeployment(parent, cfg, progress, true)
}

// RunSymmetric runs cfg.Replicas xdshard replicas that each build every
// tenant (no peers), the same proxies spread over them as RunReplicas
// spreads them, and the same events: the deployment sharding is to beat.
func RunSymmetric(parent context.Context, cfg Config, progress io.Writer) (*ShardedResult, error) {
	cfg.KillReplica = false
	return runDeployment(parent, cfg, progress, false)
}

func runDeployment(parent context.Context, cfg Config, progress io.Writer, sharded bool) (*ShardedResult, error) {
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
	cl := &cluster{peers: peers, symmetric: !sharded}
	res := &ShardedResult{Replicas: n, Proxies: cfg.Proxies, Symmetric: !sharded}
	for _, m := range peers {
		ccfg := cfg
		ccfg.Shard = nil
		if sharded {
			ccfg.Shard = &Shard{ReplicaID: m.ID, PeerAddr: m.Addr, Peers: peers}
		}
		c, err := startChild(ctx, cfg.Exe, ccfg, "xdshard")
		if err != nil {
			return nil, fmt.Errorf("replica %s: %w", m.ID, err)
		}
		r := &replicaChild{childTarget: c, id: m.ID}
		r.alive.Store(true)
		cl.reps = append(cl.reps, r)
		res.Per = append(res.Per, ReplicaFigures{ID: m.ID})
	}
	res.StartCPU, _ = cl.usage()
	for i, r := range cl.reps {
		res.Per[i].IdleRSSBytes = r.rss
		res.IdleRSSBytes += r.rss
	}
	fmt.Fprintf(progress, "%s: %d proxies\n", cl.name(), cfg.Proxies)
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
	for _, p := range proxies {
		b, e, f := p.Anomalies()
		res.Backwards, res.Empty, res.Foreign = res.Backwards+b, res.Empty+e, res.Foreign+f
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
	ring := sharding.NewRing(c.peers)
	c.usage()
	cpu0 := c.cpus()
	start := time.Now()
	for i := range proxies {
		p := proxy.New(fleet.Tenant(i%cfg.Tenants), fmt.Sprintf("pod-%d", i), cfg.Delta || (cfg.Mix && i%2 == 1))
		proxies[i], homes[i] = p, home(i, cfg.Tenants, n)
		if cfg.Directed {
			// Each proxy on its tenant's owner (the same replica in the
			// symmetric run, so both carry the same streams).
			owner, _ := ring.Owner(p.Namespace)
			homes[i] = slices.IndexFunc(c.peers, func(m sharding.Member) bool { return m.ID == owner.ID })
		}
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
	b0, p0 := c.metrics(buildsMetric), c.metrics(peerBytesMetric)
	if cfg.CPUProfile != "" {
		// Each replica's CPU profile of the event: NAME-rK-EVENT.pprof.
		c.events++
		for _, r := range c.live() {
			name := strings.ReplaceAll(c.name(), " ", "_")
			if err := r.profile(filepath.Join(cfg.CPUProfile, fmt.Sprintf("%s-%s-%d.pprof", name, r.id, c.events))); err != nil {
				return ShardedEvent{}, perReplica{}, err
			}
		}
		defer func() {
			for _, r := range c.live() {
				_ = r.profile("-")
			}
		}()
	}
	c.capture = true
	er, err := run()
	cpu0 := c.captured // read by churn before the change
	cpu1 := c.cpus()   // read by converge when the last proxy converged
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
	builds := c.metrics(buildsMetric)
	builds[len(builds)-1] = 0 // the killed replica's are not read again
	b0 := sum(builds)
	sentBytes := func() map[string]float64 {
		out := map[string]float64{}
		for _, typ := range []string{"cds", "eds", "lds", "rds"} {
			v := c.metrics(sentBytesMetric + "{type=" + typ + "}")
			v[len(v)-1] = 0
			out[typ] = sum(v)
		}
		return out
	}
	sent0 := sentBytes()
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
			if !p.Delta && (t == proxy.EDS || t == proxy.RDS) && !a.At.After(t0) {
				return false // a new SotW stream is sent its named types; CDS and LDS only if they changed
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
	fo.SentBytes = map[string]float64{}
	for typ, v := range sentBytes() {
		fo.SentBytes[typ] = v - sent0[typ]
	}
	for _, i := range victims {
		p := proxies[i]
		if refs[kind{p.Namespace, p.Delta}] == nil {
			fo.Unverified++
		}
		_, resent := p.Streams()
		fo.Resent += resent
	}
	fmt.Fprintf(progress, "  %d/%d proxies of %s synced again on another replica, the last after %s\n", fo.Synced, fo.Victims, dead.id, fo.All.Round(time.Millisecond))
	if len(pending) > 0 {
		return fo, fmt.Errorf("failover: %d of %d proxies of the killed replica synced again within %s", fo.Synced, fo.Victims, cfg.Timeout)
	}
	// Adoption of the killed replica's tenants, before the changes, so
	// that their builds (since the kill) are counted apart.
	var adopted float64
	last := time.Now()
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end) && time.Since(last) < time.Second; {
		select {
		case <-ctx.Done():
			return fo, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if a := sum(c.metrics(adoptedMetric)); a != adopted {
			adopted, last = a, time.Now()
			fo.AdoptedAt = last.Sub(t0)
		}
	}
	fo.Adopted = adopted
	fo.AdoptionBuilds = sum(c.settled(ctx, buildsMetric, max(200*time.Millisecond, 2*cfg.Debounce))) - b0
	fmt.Fprintf(progress, "  %g tenants adopted on the survivors, the last %s after the kill; %g builds\n", fo.Adopted, fo.AdoptedAt.Round(time.Millisecond), fo.AdoptionBuilds)
	ring := sharding.NewRing(c.peers)
	owner := func(k int) string { o, _ := ring.Owner(fleet.Tenant(k)); return o.ID }
	changes := []struct {
		ev         event
		index, gen int
	}{{events(cfg)[0], 0, 10}}
	if owner(0) != dead.id {
		for k := 1; k < cfg.Tenants; k++ {
			if owner(k) == dead.id {
				ns := fleet.Tenant(k)
				ev := event{name: "endpoints in " + ns, affected: func(p *proxy.Proxy) bool { return p.Namespace == ns }, typeURL: proxy.EDS}
				// Event 3 changes tenant (gen-100)%tenants; this gen is one no earlier phase used.
				changes = append(changes, struct {
					ev         event
					index, gen int
				}{ev, 3, 100 + k + 10*cfg.Tenants})
				break
			}
		}
	}
	for _, ch := range changes {
		se, d, err := c.phase(ctx, cfg, func() (EventResult, error) { return churn(ctx, cfg, c, proxies, ch.ev, ch.index, ch.gen) })
		tenant := fleet.Tenant(0)
		if ch.index == 3 {
			tenant = fleet.Tenant((ch.gen - 100) % cfg.Tenants)
		}
		ak := AfterKill{ShardedEvent: se, ReplicaBuilds: d.builds, ReplicaCPU: d.cpu}
		if o, ok := ring.Owner(tenant); ok {
			ak.Owner = o.ID
		}
		ak.Name = ch.ev.name + ", after the kill"
		fo.After = append(fo.After, ak)
		fmt.Fprintf(progress, "  %s (owner %s): %d/%d converged, p99 %s, %g builds\n", ak.Name, ak.Owner, se.Converged, se.Affected, se.Convergence.P99, se.Builds)
		if err != nil {
			return fo, err
		}
	}
	return fo, nil
}

// Capacity is what the capacity model sizes replicas for.
type Capacity struct {
	ChangeRate  float64 // mesh-wide changes per second
	Cores       float64 // per replica
	MemoryBytes uint64  // per replica
	Utilization float64 // target, of cores and memory; 0 for 0.6
	Proxies     []int   // fleet sizes to size for; nil for 100,000 and 1,000,000
}

// WriteReplicas prints the sharded run: per phase and per replica, the
// ratio of its CPU to single's (the one-replica run of the same fleet;
// nil if none), the failover, and the capacity model.
func WriteReplicas(w io.Writer, cfg Config, single *Result, sr *ShardedResult, cp Capacity) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	n := sr.Replicas
	spread := "spread round-robin (each tenant's over every replica)"
	if cfg.Directed {
		spread = "each on its tenant's owner (--directed)"
	}
	fmt.Fprintf(tw, "\nsharded: %d replicas with static peers, each in its own process; %d proxies %s;\nevery event applied to every replica, as replicas reading one API server; the 1-replica figures are the xdshard run above\n\n", n, sr.Proxies, spread)
	ids := make([]string, n)
	for i, p := range sr.Per {
		ids[i] = p.ID
	}
	fmt.Fprintf(tw, "PHASE\tPROXIES\tp50\tp99\tmax\tCPU s %s\ttotal CPU s\t1 replica\tratio\tbuilds\tpeer KiB\n", strings.Join(ids, "/"))
	per := func(f func(ReplicaFigures) float64) string {
		parts := make([]string, n)
		for i, p := range sr.Per {
			parts[i] = fmt.Sprintf("%.3f", f(p))
		}
		return strings.Join(parts, "/")
	}
	one := func(f func(*Result) float64) (string, string, float64) {
		if single == nil {
			return "-", "-", 0
		}
		v := f(single)
		return fmt.Sprintf("%.3f", v), "", v
	}
	s1, _, v1 := one(func(r *Result) float64 { return r.SyncCPU })
	fmt.Fprintf(tw, "initial sync\t%d\t%s\t%s\t%s\t%s\t%.3f\t%s\t%s\t\t\n", sr.Proxies, ms(sr.InitialSync.P50), ms(sr.InitialSync.P99), ms(sr.InitialSync.Max),
		per(func(p ReplicaFigures) float64 { return p.SyncCPU }), sr.SyncCPU, s1, fratio(sr.SyncCPU, v1))
	for k, e := range sr.Events {
		s1, _, v1 := one(func(r *Result) float64 {
			if k < len(r.Events) {
				return r.Events[k].CPUSeconds
			}
			return 0
		})
		c := e.Convergence
		fmt.Fprintf(tw, "%s\t%d/%d\t%s\t%s\t%s\t%s\t%.3f\t%s\t%s\t%g\t%.1f\n", e.Name, e.Converged, e.Affected, ms(c.P50), ms(c.P99), ms(c.Max),
			per(func(p ReplicaFigures) float64 { return p.EventCPU[k] }), e.CPUSeconds, s1, fratio(e.CPUSeconds, v1), e.Builds, e.PeerBytes/1024)
	}
	if fo := sr.Failover; fo != nil {
		for _, ak := range fo.After {
			c := ak.Convergence
			fmt.Fprintf(tw, "%s (owner %s)\t%d/%d\t%s\t%s\t%s\t%s\t%.3f\t\t\t%g (%s)\t%.1f\n", ak.Name, ak.Owner, ak.Converged, ak.Affected, ms(c.P50), ms(c.P99), ms(c.Max),
				joinf(ak.ReplicaCPU, "%.3f"), ak.CPUSeconds, ak.Builds, joinf(ak.ReplicaBuilds, "%g"), ak.PeerBytes/1024)
		}
	}
	meshWide := -1
	for k, e := range sr.Events {
		if strings.HasPrefix(e.Name, "mesh-wide") {
			meshWide = k
		}
	}
	fmt.Fprintf(tw, "\nREPLICA\tTENANTS BUILT\tFETCHED\tSTREAMS\tSHARE OF STREAMS\tSHARE OF MESH-WIDE CPU\tRSS idle -> end MiB\n")
	var streams int
	var meshCPU float64
	for _, p := range sr.Per {
		streams += p.Streams
		if meshWide >= 0 {
			meshCPU += p.EventCPU[meshWide]
		}
	}
	for _, p := range sr.Per {
		share := "-"
		if meshWide >= 0 && meshCPU > 0 {
			share = fmt.Sprintf("%.2f", p.EventCPU[meshWide]/meshCPU)
		}
		killed := ""
		if p.Killed {
			killed = " (killed after the events)"
		}
		fmt.Fprintf(tw, "%s%s\t%g\t%g\t%d\t%.2f\t%s\t%.0f -> %.0f\n", p.ID, killed, p.Owned, p.Fetched, p.Streams, float64(p.Streams)/float64(max(streams, 1)), share, mib(p.IdleRSSBytes), mib(p.RSSBytes))
	}
	fmt.Fprintf(tw, "total\t\t\t%d\t1/N = %.2f\t\t%.0f -> %.0f\n", streams, 1/float64(n), mib(sr.IdleRSSBytes), mib(sr.RSSBytes))
	if err := tw.Flush(); err != nil {
		return err
	}
	if meshWide >= 0 && single != nil && meshWide < len(single.Events) {
		r := sr.Events[meshWide].CPUSeconds / single.Events[meshWide].CPUSeconds
		verdict := "met"
		if r > 1.2 {
			verdict = "missed"
		}
		tenants := 0.0
		for _, p := range sr.Per {
			tenants += p.Owned
		}
		fmt.Fprintf(w, "\nmesh-wide change: total CPU with %d replicas / with 1 = %.3f / %.3f = %.2f (target <= 1.2: %s); %g builds in the deployment for %g tenants (istio-system included)\n",
			n, sr.Events[meshWide].CPUSeconds, single.Events[meshWide].CPUSeconds, r, verdict, sr.Events[meshWide].Builds, tenants)
	}
	if fo := sr.Failover; fo != nil {
		fmt.Fprintf(w, "kill -9 of %s: %d/%d of its proxies synced again on another replica; from the kill: p50 %s, p99 %s, last %s (polled every 5 ms)\n",
			fo.Replica, fo.Synced, fo.Victims, ms(fo.Times.P50), ms(fo.Times.P99), ms(fo.All))
		fmt.Fprintf(w, "  synced = on a live replica, holding the version of every type a proxy of its tenant and protocol on a live replica holds")
		fmt.Fprintf(w, ";\n  a delta proxy whose versions were already current is sent nothing, a SotW proxy its named EDS and RDS only (CDS and LDS are sent only if they changed);\n  resources re-sent at a version the proxy held (delta: any; SotW: CDS, LDS): %d", fo.Resent)
		if fo.Unverified > 0 {
			fmt.Fprintf(w, "; %d had no such proxy to compare with", fo.Unverified)
		}
		fmt.Fprintf(w, "\n  bytes the survivors sent until then: CDS %s, EDS %s, LDS %s, RDS %s", kib(fo.SentBytes["cds"]), kib(fo.SentBytes["eds"]), kib(fo.SentBytes["lds"]), kib(fo.SentBytes["rds"]))
		fmt.Fprintf(w, "\n  adoption: the survivors build the tenants of %s they have clients of once it has not answered for a while (static peers never drop it):\n  %g tenants adopted (summed over the survivors), the last %s after the kill, %g builds",
			fo.Replica, fo.Adopted, ms(fo.AdoptedAt), fo.AdoptionBuilds)
		for _, ak := range fo.After {
			if ak.Owner == fo.Replica {
				fmt.Fprintf(w, "; a change in a tenant %s owned now costs %g build(s), one per survivor with clients of it", fo.Replica, ak.Builds)
			}
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "proxies saw, over the whole run: %d versions coming back after they were replaced, %d empty CDS or LDS, %d clusters of another tenant\n", sr.Backwards, sr.Empty, sr.Foreign)
	if meshWide >= 0 {
		writeCapacity(w, sr, sr.Events[meshWide].CPUSeconds, cp)
	}
	return nil
}

// joinf formats each of xs with format, joined by "/".
func joinf(xs []float64, format string) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf(format, x)
	}
	return strings.Join(parts, "/")
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// writeCapacity prints how many replicas the measured run extrapolates to
// for larger fleets, with the formula and the numbers plugged in.
func writeCapacity(w io.Writer, sr *ShardedResult, meshCPU float64, cp Capacity) {
	u := cp.Utilization
	if u <= 0 {
		u = 0.6
	}
	sizes := cp.Proxies
	if sizes == nil {
		sizes = []int{100_000, 1_000_000}
	}
	n := float64(sr.Replicas)
	proxies := float64(sr.Proxies)
	c := meshCPU / proxies
	grown := 0.0
	if sr.RSSBytes > sr.IdleRSSBytes {
		grown = float64(sr.RSSBytes - sr.IdleRSSBytes)
	}
	m := grown / proxies
	idle := float64(sr.IdleRSSBytes) / n
	s := sr.SyncCPU / proxies
	mem := float64(cp.MemoryBytes)
	fmt.Fprintf(w, "\ncapacity model: a linear extrapolation from this run (%d proxies on %d replicas), not a measurement at that scale\n", sr.Proxies, sr.Replicas)
	fmt.Fprintf(w, "  c = CPU per proxy per mesh-wide change = %.3f CPU s / %d proxies = %.1f us\n", meshCPU, sr.Proxies, c*1e6)
	fmt.Fprintf(w, "  m = memory per proxy = (RSS at the end - idle RSS, summed over the replicas) / proxies = (%.0f - %.0f MiB) / %d = %.1f KiB\n",
		mib(sr.RSSBytes), mib(sr.IdleRSSBytes), sr.Proxies, m/1024)
	fmt.Fprintf(w, "  I = idle RSS of a replica (mesh model, its tenants' snapshots) = %.0f MiB\n", idle/(1<<20))
	fmt.Fprintf(w, "  per replica: %g cores, %.0f MiB, %.0f%% target utilization; %g mesh-wide changes/s\n", cp.Cores, mem/(1<<20), u*100, cp.ChangeRate)
	fmt.Fprintf(w, "  replicas = max(ceil(P x c x rate / (cores x %.1f)), ceil(P x m / (memory x %.1f - I)))\n", u, u)
	for _, p := range sizes {
		P := float64(p)
		cpuN := P * c * cp.ChangeRate / (cp.Cores * u)
		memN := math.Inf(1)
		if mem*u > idle {
			memN = P * m / (mem*u - idle)
		}
		need := max(math.Ceil(cpuN), math.Ceil(memN), 1)
		fmt.Fprintf(w, "  P = %d: CPU ceil(%d x %.1fus x %g / (%g x %.1f)) = ceil(%.2f) = %.0f; memory ceil(%d x %.1f KiB / (%.0f MiB x %.1f - %.0f MiB)) = ceil(%.2f) = %.0f; replicas %.0f\n",
			p, p, c*1e6, cp.ChangeRate, cp.Cores, u, cpuN, math.Ceil(cpuN), p, m/1024, mem/(1<<20), u, idle/(1<<20), memN, math.Ceil(memN), need)
		fmt.Fprintf(w, "    and a full resync (every proxy reconnecting at once) costs each of them P/replicas x %.1f us (sync CPU per proxy) = %.1f CPU s, %.1f s on %g cores\n",
			s*1e6, P/need*s, P/need*s/cp.Cores, cp.Cores)
	}
	fmt.Fprintf(w, "  not modelled: builds (a mesh-wide change rebuilds every tenant, a fixed cost counted here per proxy), fetched snapshots (bounded by tenants, not proxies),\n  idle streams' keepalives, and this load generator sharing the machine\n")
}

// kib formats a byte count in KiB.
func kib(b float64) string { return fmt.Sprintf("%.1f KiB", b/1024) }

// WriteSymmetric prints the sharded deployment beside the symmetric one
// (every replica building every tenant) of as many replicas, event by
// event: total CPU, builds, and each replica's memory.
func WriteSymmetric(w io.Writer, sharded, symmetric *ShardedResult) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	n := symmetric.Replicas
	fmt.Fprintf(tw, "\nsharded against symmetric: %d replicas each way, the same proxies spread the same way; symmetric replicas each build every tenant (no peers), as replicated istiods do\n\n", n)
	fmt.Fprintf(tw, "PHASE\tCPU s sharded\tsymmetric\tsharded/symmetric\tbuilds sharded\tsymmetric\tpeer KiB\tp99 sharded\tsymmetric\n")
	fmt.Fprintf(tw, "start (read, build)\t%.3f\t%.3f\t%s\t\t\t\t\t\n", sharded.StartCPU, symmetric.StartCPU, fratio(sharded.StartCPU, symmetric.StartCPU))
	fmt.Fprintf(tw, "initial sync\t%.3f\t%.3f\t%s\t\t\t\t%s\t%s\n", sharded.SyncCPU, symmetric.SyncCPU, fratio(sharded.SyncCPU, symmetric.SyncCPU), ms(sharded.InitialSync.P99), ms(symmetric.InitialSync.P99))
	st, yt := sharded.StartCPU+sharded.SyncCPU, symmetric.StartCPU+symmetric.SyncCPU
	fmt.Fprintf(tw, "start + initial sync\t%.3f\t%.3f\t%s\t\t\t\t\t\n", st, yt, fratio(st, yt))
	for k, e := range sharded.Events {
		if k >= len(symmetric.Events) {
			break
		}
		y := symmetric.Events[k]
		fmt.Fprintf(tw, "%s\t%.3f\t%.3f\t%s\t%g\t%g\t%.1f\t%s\t%s\n", e.Name, e.CPUSeconds, y.CPUSeconds, fratio(e.CPUSeconds, y.CPUSeconds), e.Builds, y.Builds, e.PeerBytes/1024, ms(e.Convergence.P99), ms(y.Convergence.P99))
	}
	per := func(r *ShardedResult) (idle, end float64) {
		for _, p := range r.Per {
			idle, end = idle+mib(p.IdleRSSBytes), end+mib(p.RSSBytes)
		}
		return idle / float64(len(r.Per)), end / float64(len(r.Per))
	}
	si, se := per(sharded)
	yi, ye := per(symmetric)
	fmt.Fprintf(tw, "\nRSS per replica, idle -> end of the events: sharded %.0f -> %.0f MiB, symmetric %.0f -> %.0f MiB\n", si, se, yi, ye)
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintln(w, symmetricCheaper(sharded, symmetric, se, ye))
	return err
}

// symmetricCheaper says where, in this run, replicas that each build every
// tenant cost less than the sharded ones, beside the capacity model (which
// uses the sharded figures).
func symmetricCheaper(sharded, symmetric *ShardedResult, shardedRSS, symmetricRSS float64) string {
	var where []string
	add := func(name string, x, y float64) {
		if y > 0 && x > y {
			where = append(where, fmt.Sprintf("%s (sharded %.2fx)", name, x/y))
		}
	}
	add("start + initial sync", sharded.StartCPU+sharded.SyncCPU, symmetric.StartCPU+symmetric.SyncCPU)
	for k, e := range sharded.Events {
		if k < len(symmetric.Events) {
			add(e.Name, e.CPUSeconds, symmetric.Events[k].CPUSeconds)
		}
	}
	add("RSS per replica at the end", shardedRSS, symmetricRSS)
	if len(where) == 0 {
		return "the capacity model above uses the sharded figures; in this run symmetric replicas were cheaper nowhere"
	}
	return "the capacity model above uses the sharded figures; in this run symmetric replicas were cheaper in: " + strings.Join(where, ", ") +
		" (sharding pays where clients sit with their tenant's owner: --directed, --stream-affinity)"
}
