package bench

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/xdshard/xdshard/bench/baseline"
	"github.com/xdshard/xdshard/bench/fleet"
	"github.com/xdshard/xdshard/bench/proxy"
	"github.com/xdshard/xdshard/snapshot/model"
)

// Config sizes a run.
type Config struct {
	Proxies, Tenants, Services, Endpoints int
	Delta                                 bool
	Mix                                   bool // half the proxies SotW, half delta
	// Misbehaving: this many proxies NACK everything, as many never
	// answer (no ACK, no NACK), as many read slowly, as many never read
	// and ask again every 20 ms (each on a connection of its own with
	// 64 KiB windows), and as many subscribe to fourteen made-up types of
	// 1,000 names beside their own; they are left out of the figures,
	// which show whether they held the others back.
	Misbehaving int
	// HeapProfile, when set, receives a heap profile of each server's
	// phase (file name prefixed with the server's name) at its end, and,
	// for a server in its own process, two more: before its proxies
	// connect (suffix -idle) and once they synced (-synced), so that
	// `go tool pprof -base X-idle X-synced` shows what the proxies cost.
	HeapProfile string
	// Exe, when set, runs each server under test as `Exe bench-server` in
	// a child process, so its CPU and RSS are its own.
	Exe string `json:"-"`
	// Target, when set, measures a running xdshard at HOST:PORT instead
	// (serving the same fleet: see `xdshard bench gen`). Only the initial
	// sync is measured: churn needs a server this process can change.
	Target string
	// Rate and RateEvents: after the single events, RateEvents endpoint
	// changes (one per tenant, in turn) at Rate per second.
	Rate       float64
	RateEvents int
	// CPUProfile, when set, is a directory each server in its own process
	// writes a CPU profile of each event to (SERVER-N.pprof).
	CPUProfile string
	// Soak: after everything else, churn endpoints at Rate (default 10/s)
	// over every tenant in turn for this long, checking that every
	// well-behaved proxy converges on every change and reading the
	// server's heap and goroutines at the start and the end.
	Soak      time.Duration
	Baselines []baseline.Mode
	Debounce  time.Duration
	// PushSlotUntilAnswered is serve --push-slot-until-ack for xdshard.
	PushSlotUntilAnswered bool
	Seed                  uint64
	Timeout               time.Duration // per phase
	StreamsPerConn        int
	// Replicas >= 2: RunReplicas also runs that many xdshard replicas
	// sharding the tenants (static peers), the proxies spread over them;
	// KillReplica then kills the last one and measures the failover.
	Replicas    int  `json:",omitempty"`
	KillReplica bool `json:",omitempty"`
	// Symmetric: with Replicas, RunSymmetric also runs as many replicas
	// that each build every tenant (no peers: what users run today with
	// replicated istiods), for comparison.
	Symmetric bool `json:",omitempty"`
	// Directed: with Replicas, each proxy connects to its tenant's owner
	// instead of round-robin: what streams directed to (or drifting
	// toward) their owner would give.
	Directed bool `json:",omitempty"`
	// Shard, set by the parent, makes a child one replica of those.
	Shard *Shard `json:",omitempty"`
	// FileDriven: xdshard runs as `Exe serve --config DIR` and each event
	// rewrites tenant files (see filedriven.go); baselines apply the same
	// changes from memory.
	FileDriven bool `json:",omitempty"`
	// ServeProfile, when set with FileDriven, receives a CPU profile of the
	// serve child during each event (filedriven-N.pprof).
	ServeProfile string `json:"-"`
}

// Result is one server's figures.
type Result struct {
	Server      string        `json:"server"`
	Proxies     int           `json:"proxies"`
	InitialSync Stats         `json:"initialSync"`
	SyncMs      []float64     `json:"syncMs,omitempty"` // every proxy's initial sync, sorted
	SyncCPU     float64       `json:"syncCpuSeconds"`
	Events      []EventResult `json:"events"`
	HeapBytes   uint64        `json:"heapBytes"`
	// Isolated: the server ran in its own process, so CPU figures are the
	// server's alone and RSSBytes is its resident memory at the end.
	Isolated bool   `json:"isolated"`
	RSSBytes uint64 `json:"rssBytes,omitempty"`
	// BytesSent and NACKs over the whole run, as the server counted them.
	BytesSent uint64 `json:"bytesSent"`
	NACKs     uint64 `json:"nacks"`
	// LoadCPU is the load generator's own CPU seconds (this process), when
	// the server ran apart.
	LoadCPU     float64 `json:"loadCpuSeconds,omitempty"`
	Unconverged int     `json:"unconverged"`
	// Soak, when the run had one.
	Soak *SoakResult `json:"soak,omitempty"`
	// HeapPerProxy is the server's heap once every proxy synced, less its
	// heap with the snapshots built and no proxy yet, per proxy (after a
	// collection each time): what a connected idle proxy costs the server
	// beyond the snapshots (a server in its own process only).
	HeapPerProxy uint64 `json:"heapPerProxyBytes,omitempty"`
	// LivePerProxy is the same for the heap's live objects alone
	// (HeapAlloc after a collection, where HeapPerProxy is HeapInuse: the
	// spans holding them, free slots included).
	LivePerProxy uint64 `json:"livePerProxyBytes,omitempty"`
}

// settledHeap is a server's heap in use after a collection, when it runs
// in its own process; 0 otherwise.
func settledHeap(t underTest) (inuse, live uint64) {
	c, ok := t.(*childTarget)
	if !ok {
		return 0, 0
	}
	if _, err := c.call("gc"); err != nil {
		return 0, 0
	}
	c.usage()
	return c.heap, c.live
}

// EventResult is one churn event's convergence.
type EventResult struct {
	Name        string    `json:"name"`
	Affected    int       `json:"affected"`
	Converged   int       `json:"converged"`
	Convergence Stats     `json:"convergence"`
	Ms          []float64 `json:"ms,omitempty"` // every affected proxy's convergence, sorted
	CPUSeconds  float64   `json:"cpuSeconds"`
	// Stages: the server's own push-stage figures during the event
	// (xdshard only): debounce, build, publish, queue, send, ack.
	Stages map[string]StageStat `json:"stages,omitempty"`
	// Files and RenameMs (file-driven run, xdshard): the files renamed into
	// place and the time from the first rename to the last; the clock
	// starts at the last.
	Files    int     `json:"files,omitempty"`
	RenameMs float64 `json:"renameMs,omitempty"`
	// BytesSent during the event, as the server counted them (file-driven
	// run).
	BytesSent uint64 `json:"bytesSent,omitempty"`
	// InFlight (the narrow-in-broad phase): proxies the mesh-wide push had
	// yet to reach when the one-tenant change was made.
	InFlight int `json:"inFlight,omitempty"`
}

// Stats summarises durations.
type Stats struct {
	P50, P90, P99, Max time.Duration
}

func statsOf(ds []time.Duration) Stats {
	if len(ds) == 0 {
		return Stats{}
	}
	slices.Sort(ds)
	at := func(q float64) time.Duration { return ds[int(math.Ceil(q*float64(len(ds))))-1] }
	return Stats{P50: at(0.5), P90: at(0.9), P99: at(0.99), Max: ds[len(ds)-1]}
}

// target is an in-process server under test: how to reach it and how to
// change its mesh.
type target interface {
	name() string
	addr() string
	apply(ctx context.Context, changes []model.Change) error
}

// underTest is a server under test as the runner drives it, in this process
// or in a child.
type underTest interface {
	name() string
	addr() string
	applyEvent(ctx context.Context, index, gen int) error
	// usage is the CPU seconds and RSS to attribute to the server: its own
	// in a child process; in this process, the whole process's CPU (load
	// generator included) and no RSS.
	usage() (float64, uint64)
	// stages returns the cumulative count and sum of each push stage of
	// the server's own histogram; nil when it has none.
	stages() map[string][2]float64
	// counters returns the bytes sent and NACKs received so far.
	counters() (bytes, nacks uint64)
}

// counter is an in-process target that counts what it sent.
type counter interface{ counters() (uint64, uint64) }

// stager is an in-process target with push-stage histograms.
type stager interface{ stages() map[string][2]float64 }

type local struct {
	target
	evs []event
}

func (l local) applyEvent(ctx context.Context, i, gen int) error {
	return l.target.apply(ctx, l.evs[i].changes(gen))
}

func (l local) usage() (float64, uint64) { return cpuSeconds(), 0 }

func (l local) counters() (uint64, uint64) {
	if c, ok := l.target.(counter); ok {
		return c.counters()
	}
	return 0, 0
}

func (l local) stages() map[string][2]float64 {
	if s, ok := l.target.(stager); ok {
		return s.stages()
	}
	return nil
}

// Run measures xdshard, then each baseline, on the same fleet.
func Run(ctx context.Context, cfg Config, progress io.Writer) ([]Result, error) {
	objs := fleet.Generate(fleet.Spec{Tenants: cfg.Tenants, Services: cfg.Services, Endpoints: cfg.Endpoints, Seed: cfg.Seed})
	var results []Result
	if cfg.Target != "" {
		r, err := measure(ctx, cfg, func(context.Context) (underTest, error) { return remote{cfg.Target}, nil }, progress)
		return []Result{r}, err
	}
	names := []string{"xdshard"}
	for _, m := range cfg.Baselines {
		names = append(names, string(m))
	}
	for _, n := range names {
		start := func(ctx context.Context) (underTest, error) {
			if n == "xdshard" && cfg.FileDriven {
				if cfg.Exe == "" {
					return nil, fmt.Errorf("the file-driven run needs the xdshard binary (Config.Exe) to run serve")
				}
				return startServe(ctx, cfg, objs, os.Stderr)
			}
			if cfg.Exe != "" {
				return startChild(ctx, cfg.Exe, cfg, n)
			}
			var t target
			var err error
			if n == "xdshard" {
				t, err = startXDShard(ctx, objs, cfg, nil)
			} else {
				t, err = startBaseline(ctx, objs, baseline.Mode(n), cfg)
			}
			if err != nil {
				return nil, err
			}
			return local{t, eventsFor(cfg)}, nil
		}
		r, err := measure(ctx, cfg, start, progress)
		if err != nil {
			return results, err
		}
		results = append(results, r)
	}
	return results, nil
}

func measure(parent context.Context, cfg Config, start func(context.Context) (underTest, error), progress io.Writer) (Result, error) {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	settle()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	t, err := start(ctx)
	if err != nil {
		return Result{}, err
	}
	res := Result{Server: t.name(), Proxies: cfg.Proxies, Isolated: cfg.Exe != ""}
	load0 := cpuSeconds()
	heapIdle, liveIdle := settledHeap(t)
	if err := syncHeapProfile(cfg, t, "-idle"); err != nil {
		return res, err
	}
	proxies, sync, cpu, err := connect(ctx, cfg, t, progress)
	if err != nil {
		return res, err
	}
	if err := syncHeapProfile(cfg, t, "-synced"); err != nil {
		return res, err
	}
	if heapSynced, liveSynced := settledHeap(t); heapIdle > 0 && heapSynced > heapIdle && cfg.Proxies > 0 {
		res.HeapPerProxy = (heapSynced - heapIdle) / uint64(cfg.Proxies)
		if liveSynced > liveIdle {
			res.LivePerProxy = (liveSynced - liveIdle) / uint64(cfg.Proxies)
		}
	}
	res.InitialSync, res.SyncCPU, res.SyncMs = statsOf(sync), cpu, millis(sync)
	run := churn
	if cfg.FileDriven {
		run = fileChurn
	}
	for i, ev := range eventsFor(cfg)[:3] {
		if cfg.Target != "" {
			break
		}
		c, profiled := t.(*childTarget)
		profiled = profiled && cfg.CPUProfile != "" && !cfg.FileDriven
		if profiled {
			path := filepath.Join(cfg.CPUProfile, fmt.Sprintf("%s-%d.pprof", strings.NewReplacer(" ", "_", "(", "", ")", "").Replace(t.name()), i+1))
			if err := c.profile(path); err != nil {
				return res, err
			}
		}
		er, err := run(ctx, cfg, t, proxies, ev, i, i+1)
		if profiled {
			if perr := c.profile("-"); perr != nil && err == nil {
				err = perr
			}
		}
		if err != nil {
			return res, err
		}
		res.Unconverged += er.Affected - er.Converged
		res.Events = append(res.Events, er)
		fmt.Fprintf(progress, "  %s %s: %d/%d converged, p99 %s\n", t.name(), er.Name, er.Converged, er.Affected, er.Convergence.P99)
	}
	if cfg.Target == "" && !cfg.FileDriven && cfg.Tenants > 1 {
		alone, err := narrowInBroad(ctx, cfg, t, proxies, 4, nil)
		if err != nil {
			return res, err
		}
		var narrow EventResult
		broad, err := narrowInBroad(ctx, cfg, t, proxies, 5, &narrow)
		if err != nil {
			return res, err
		}
		for _, e := range []EventResult{alone, broad, narrow} {
			res.Unconverged += e.Affected - e.Converged
		}
		res.Events = append(res.Events, alone, broad, narrow)
		fmt.Fprintf(progress, "  %s %s: %d/%d converged, max %s\n", t.name(), alone.Name, alone.Converged, alone.Affected, alone.Convergence.Max)
		fmt.Fprintf(progress, "  %s %s: %d/%d converged, max %s (%d proxies in flight when the one-tenant change was made)\n", t.name(), broad.Name, broad.Converged, broad.Affected, broad.Convergence.Max, broad.InFlight)
		fmt.Fprintf(progress, "  %s %s: %d/%d converged, p99 %s\n", t.name(), narrow.Name, narrow.Converged, narrow.Affected, narrow.Convergence.P99)
	}
	if cfg.Rate > 0 && cfg.RateEvents > 0 && cfg.Target == "" && !cfg.FileDriven {
		er, err := sustained(ctx, cfg, t, proxies)
		if err != nil {
			return res, err
		}
		res.Events = append(res.Events, er)
		fmt.Fprintf(progress, "  %s %s: %d/%d converged, p99 %s\n", t.name(), er.Name, er.Converged, er.Affected, er.Convergence.P99)
	}
	if cfg.Soak > 0 && cfg.Target == "" && !cfg.FileDriven {
		if cfg.Rate <= 0 {
			cfg.Rate = 10
		}
		fmt.Fprintf(progress, "  %s soak: %s of endpoint changes at %g/s\n", t.name(), cfg.Soak, cfg.Rate)
		sr, err := soak(ctx, cfg, t, proxies)
		if err != nil {
			return res, err
		}
		res.Soak = &sr
		res.Unconverged += sr.Unconverged
		fmt.Fprintf(progress, "  %s soak: %d changes in %d rounds, %d of %d convergences missed, heap %.0f -> %.0f MiB, goroutines %d -> %d\n",
			t.name(), sr.Changes, sr.Rounds, sr.Unconverged, sr.Checked, float64(sr.HeapStart)/(1<<20), float64(sr.HeapEnd)/(1<<20), sr.GoroutinesStart, sr.GoroutinesEnd)
	}
	settle()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	_, res.RSSBytes = t.usage()
	if c, ok := t.(*childTarget); ok {
		res.HeapBytes = c.heap // the server's own heap, not this process's
	}
	if s, ok := t.(*serveTarget); ok {
		res.HeapBytes = s.heapBytes()
	}
	res.BytesSent, res.NACKs = t.counters()
	if res.Isolated {
		res.LoadCPU = cpuSeconds() - load0
	}
	if cfg.HeapProfile != "" {
		if c, ok := t.(heapProfiler); ok {
			// The server's own heap, not this load generator's.
			if err := c.heapProfile(heapProfileName(cfg.HeapProfile, t.name())); err != nil {
				return res, err
			}
		} else {
			writeHeapProfile(cfg.HeapProfile, t.name())
		}
	}
	if !res.Isolated && after.HeapInuse > before.HeapInuse {
		res.HeapBytes = after.HeapInuse - before.HeapInuse
	}
	return res, nil
}

// connect starts the proxies, spread over the tenants, a few hundred
// streams per connection, and waits for every one to sync.
func connect(ctx context.Context, cfg Config, srv underTest, progress io.Writer) ([]*proxy.Proxy, []time.Duration, float64, error) {
	addr := srv.addr()
	per := max(cfg.StreamsPerConn, 1)
	var conns []*grpc.ClientConn
	proxies := make([]*proxy.Proxy, cfg.Proxies)
	cpu0, _ := srv.usage()
	start := time.Now()
	var wg sync.WaitGroup
	for i := range proxies {
		if i%per == 0 {
			c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				return nil, nil, 0, err
			}
			conns = append(conns, c)
			go func() { <-ctx.Done(); c.Close() }()
		}
		p := proxy.New(fleet.Tenant(i%cfg.Tenants), fmt.Sprintf("pod-%d", i), cfg.Delta || (cfg.Mix && i%2 == 1))
		conn := conns[len(conns)-1]
		if i < 5*cfg.Misbehaving {
			p.Misbehaving = true
			switch i % 5 {
			case 3:
				p.NotReading, p.Delta = true, false
				c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
					grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
				if err != nil {
					return nil, nil, 0, err
				}
				go func() { <-ctx.Done(); c.Close() }()
				conn = c
			case 4:
				p.MadeUpTypes, p.Delta = true, false
			case 0:
				p.NACK = true
			case 1:
				p.SlowRead = 200 * time.Millisecond
			case 2:
				p.Silent.Store(true) // answers nothing: a wedged Envoy, STALE for ever
			}
		}
		proxies[i] = p
		wg.Add(1)
		go func() { defer wg.Done(); _ = p.Run(ctx, conn) }()
	}
	go func() { <-ctx.Done(); wg.Wait() }()
	sync := make([]time.Duration, 0, len(proxies))
	deadline := time.After(cfg.Timeout)
	for i, p := range proxies {
		if p.Misbehaving {
			continue
		}
		select {
		case <-p.Synced():
			sync = append(sync, p.Latest(proxy.RDS).At.Sub(start))
		case <-deadline:
			return proxies, sync, 0, fmt.Errorf("initial sync: %d of %d proxies synced within %s", i, len(proxies), cfg.Timeout)
		case <-ctx.Done():
			return proxies, sync, 0, ctx.Err()
		}
		if (i+1)%max(len(proxies)/10, 1) == 0 {
			fmt.Fprintf(progress, "\r  synced %d/%d", i+1, len(proxies))
		}
	}
	fmt.Fprintln(progress)
	cpu1, _ := srv.usage()
	return proxies, sync, cpu1 - cpu0, nil
}

// cpuSeconds is this process's CPU time. The load generator runs in the
// same process, so it is the server's and the proxies' together; the same
// proxies drive every server, so the difference between servers is the
// servers'.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// heapProfiler is a server in a process of its own that writes its heap
// profile: a bench-server child, or xdshard serve (file-driven).
type heapProfiler interface{ heapProfile(path string) error }

// syncHeapProfile writes the heap profile of a server in its own process
// with suffix, when profiles were asked for.
func syncHeapProfile(cfg Config, t underTest, suffix string) error {
	c, ok := t.(heapProfiler)
	if !ok || cfg.HeapProfile == "" {
		return nil
	}
	return c.heapProfile(heapProfileName(cfg.HeapProfile, t.name()) + suffix)
}

// heapProfileName is where server's heap profile of path goes.
func heapProfileName(path, server string) string {
	return filepath.Join(filepath.Dir(path), strings.NewReplacer(" ", "-", "(", "", ")", "").Replace(server)+"-"+filepath.Base(path))
}

func writeHeapProfile(path, server string) {
	name := heapProfileName(path, server)
	f, err := os.Create(name)
	if err != nil {
		return
	}
	defer f.Close()
	_ = pprof.WriteHeapProfile(f)
}

// remote is an xdshard this process does not run: only its address.
type remote struct{ address string }

func (r remote) name() string { return "xdshard at " + r.address }
func (r remote) addr() string { return r.address }
func (r remote) applyEvent(context.Context, int, int) error {
	return fmt.Errorf("cannot change a remote server")
}
func (r remote) usage() (float64, uint64) { return 0, 0 }

func (r remote) stages() map[string][2]float64 { return nil }
func (r remote) counters() (uint64, uint64)    { return 0, 0 }

// millis lists sorted durations in milliseconds, for plots.
func millis(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = float64(d.Microseconds()) / 1000
	}
	return out
}
