package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/xdshard/xdshard/bench/fleet"
	"github.com/xdshard/xdshard/bench/proxy"
	"github.com/xdshard/xdshard/snapshot/model"
)

// event is one churn event: what changes, which proxies must see it, and
// the type they see it in.
type event struct {
	name     string
	changes  func(gen int) []model.Change
	affected func(p *proxy.Proxy) bool
	typeURL  string
}

func events(cfg Config) []event {
	return []event{
		{"endpoints in one tenant", func(gen int) []model.Change { return fleet.ScaleEndpoints(0, 0, cfg.Endpoints, gen) },
			func(p *proxy.Proxy) bool { return p.Namespace == fleet.Tenant(0) }, proxy.EDS},
		{"weights in one tenant", func(gen int) []model.Change { return fleet.ShiftWeight(1%cfg.Tenants, 0, 10+gen) },
			func(p *proxy.Proxy) bool { return p.Namespace == fleet.Tenant(1%cfg.Tenants) }, proxy.RDS},
		{"mesh-wide (istio-system)", func(gen int) []model.Change { return fleet.MeshWide(gen) },
			func(*proxy.Proxy) bool { return true }, proxy.EDS},
		// Index 3 is not a single event: sustained churn applies it with
		// gen = 100+k to tenant k.
		{"endpoints in tenant k", func(gen int) []model.Change {
			return fleet.ScaleEndpoints((gen-100)%cfg.Tenants, 1, cfg.Endpoints, gen)
		},
			func(*proxy.Proxy) bool { return false }, proxy.EDS},
		// Index 4, the soak's: gen = 100+k+r*tenants changes tenant k in
		// round r, one endpoint more in odd rounds, so every change differs
		// from the one before it whatever the addresses.
		{"soak: endpoints in tenant k", func(gen int) []model.Change {
			k, r := (gen-100)%cfg.Tenants, (gen-100)/cfg.Tenants
			return fleet.ScaleEndpoints(k, 1, cfg.Endpoints+r%2, gen)
		},
			func(*proxy.Proxy) bool { return false }, proxy.EDS},
	}
}

// waiter is one affected proxy: its last response of the event's type
// before the change, and when the change entered the server.
type waiter struct {
	p      *proxy.Proxy
	before proxy.Arrival
	t0     time.Time
}

// converge waits until every waiter received a new version of typeURL (or
// the phase times out) and finishes res with the figures of the interval
// since cpu0 and st0.
func converge(ctx context.Context, cfg Config, t underTest, typeURL string, ws []waiter, res *EventResult, cpu0 float64, st0 map[string][2]float64) error {
	res.Affected = len(ws)
	var conv []time.Duration
	deadline := time.Now().Add(cfg.Timeout)
	for _, w := range ws {
		for {
			a := w.p.Latest(typeURL)
			if a.Count > w.before.Count && (a.Version != w.before.Version || a.Version == "") {
				conv = append(conv, a.At.Sub(w.t0))
				res.Converged++
				break
			}
			if time.Now().After(deadline) {
				break
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(2 * time.Millisecond):
			}
		}
	}
	res.Convergence, res.Ms = statsOf(conv), millis(conv)
	cpu1, _ := t.usage()
	res.CPUSeconds = cpu1 - cpu0
	res.Stages = stageDelta(st0, t.stages())
	if res.Converged < res.Affected {
		return fmt.Errorf("%s on %s: %d of %d proxies converged within %s", res.Name, t.name(), res.Converged, res.Affected, cfg.Timeout)
	}
	return nil
}

// churn applies one event and waits until every affected proxy received a
// new version of the event's type.
func churn(ctx context.Context, cfg Config, t underTest, proxies []*proxy.Proxy, ev event, index, gen int) (EventResult, error) {
	var ws []waiter
	for _, p := range proxies {
		if ev.affected(p) && !p.Misbehaving {
			ws = append(ws, waiter{p: p, before: p.Latest(ev.typeURL)})
		}
	}
	cpu0, _ := t.usage()
	st0 := t.stages()
	t0 := time.Now()
	for i := range ws {
		ws[i].t0 = t0
	}
	res := EventResult{Name: ev.name}
	if err := t.applyEvent(ctx, index, gen); err != nil {
		return res, err
	}
	return res, converge(ctx, cfg, t, ev.typeURL, ws, &res, cpu0, st0)
}

// sustained applies n endpoint changes at rate per second, each in the next
// tenant in turn, then waits until every affected proxy received each, and
// reports all convergences together: push latency under steady churn.
func sustained(ctx context.Context, cfg Config, t underTest, proxies []*proxy.Proxy) (EventResult, error) {
	n := min(cfg.RateEvents, cfg.Tenants) // one change per tenant, so each proxy sees one
	res := EventResult{Name: fmt.Sprintf("%d endpoint changes at %g/s", n, cfg.Rate)}
	var waits []waiter
	cpu0, _ := t.usage()
	st0 := t.stages()
	tick := time.NewTicker(time.Duration(float64(time.Second) / cfg.Rate))
	defer tick.Stop()
	for k := 0; k < n; k++ {
		ns := fleet.Tenant(k)
		for _, p := range proxies {
			if p.Namespace == ns && !p.Misbehaving {
				waits = append(waits, waiter{p: p, before: p.Latest(proxy.EDS)})
			}
		}
		t0 := time.Now()
		for i := len(waits) - 1; i >= 0 && waits[i].t0.IsZero(); i-- {
			waits[i].t0 = t0
		}
		if err := t.applyEvent(ctx, 3, 100+k); err != nil {
			return res, err
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return res, ctx.Err()
		}
	}
	return res, converge(ctx, cfg, t, proxy.EDS, waits, &res, cpu0, st0)
}

// SoakResult is a soak: endpoint churn over every tenant in turn at
// cfg.Rate for cfg.Soak, every round's well-behaved proxies checked for
// convergence, and the server's heap and goroutines at the start and end.
type SoakResult struct {
	Seconds     float64 `json:"seconds"`
	Rounds      int     `json:"rounds"`
	Changes     int     `json:"changes"`
	Checked     int     `json:"checked"` // proxy convergences checked, over all rounds
	Unconverged int     `json:"unconverged"`
	WorstP99Ms  float64 `json:"worstP99Ms"`
	HeapStart   uint64  `json:"heapStartBytes"`
	// HeapWarm is the heap once every tenant's history of kept versions
	// has filled (after soakWarmRounds rounds), from which it should stay flat.
	HeapWarm        uint64 `json:"heapWarmBytes,omitempty"`
	HeapEnd         uint64 `json:"heapEndBytes"`
	GoroutinesStart int    `json:"goroutinesStart"`
	GoroutinesEnd   int    `json:"goroutinesEnd"`
}

// soakWarmRounds is the rounds after which every tenant's history is
// full (snapshot.DefaultHistory versions, and one more).
const soakWarmRounds = 11

// soak runs rounds of one endpoint change per tenant at cfg.Rate until
// cfg.Soak has passed (bounded: it stops then, or when ctx ends), and
// after each round waits for the round's well-behaved proxies to
// converge. The server must run in its own process, whose heap and
// goroutines are its own.
func soak(ctx context.Context, cfg Config, t underTest, proxies []*proxy.Proxy) (SoakResult, error) {
	c, ok := t.(*childTarget)
	if !ok {
		return SoakResult{}, fmt.Errorf("a soak measures a server in its own process; drop --in-process")
	}
	var res SoakResult
	settle := func() (uint64, int) {
		time.Sleep(time.Second) // let the last pushes' garbage be collected
		_, _ = c.call("gc")
		t.usage()
		return c.heap, c.goroutines
	}
	res.HeapStart, res.GoroutinesStart = settle()
	start := time.Now()
	tick := time.NewTicker(time.Duration(float64(time.Second) / cfg.Rate))
	defer tick.Stop()
	for time.Since(start) < cfg.Soak {
		res.Rounds++
		er := EventResult{Name: fmt.Sprintf("soak round %d", res.Rounds)}
		var waits []waiter
		cpu0, _ := t.usage()
		st0 := t.stages()
		for k := 0; k < cfg.Tenants && time.Since(start) < cfg.Soak; k++ {
			ns := fleet.Tenant(k)
			t0 := time.Now()
			for _, p := range proxies {
				if p.Namespace == ns && !p.Misbehaving {
					waits = append(waits, waiter{p: p, before: p.Latest(proxy.EDS), t0: t0})
				}
			}
			if err := t.applyEvent(ctx, 4, 100+k+res.Rounds*cfg.Tenants); err != nil {
				return res, err
			}
			res.Changes++
			select {
			case <-tick.C:
			case <-ctx.Done():
				return res, ctx.Err()
			}
		}
		err := converge(ctx, cfg, t, proxy.EDS, waits, &er, cpu0, st0)
		res.Checked += er.Affected
		res.Unconverged += er.Affected - er.Converged
		res.WorstP99Ms = max(res.WorstP99Ms, float64(er.Convergence.P99)/float64(time.Millisecond))
		if err != nil && ctx.Err() != nil {
			return res, err
		}
		if res.Rounds == soakWarmRounds {
			res.HeapWarm, _ = settle()
			if cfg.HeapProfile != "" {
				_ = c.heapProfile(heapProfileName(cfg.HeapProfile, t.name()) + "-soak-warm")
			}
		}
	}
	res.Seconds = time.Since(start).Seconds()
	res.HeapEnd, res.GoroutinesEnd = settle()
	if cfg.HeapProfile != "" {
		_ = c.heapProfile(heapProfileName(cfg.HeapProfile, t.name()) + "-soak-end")
	}
	return res, nil
}

// narrowInBroad makes a mesh-wide change (endpoints, EDS) at gen and,
// with narrow, a change to one tenant (weights, RDS) while the mesh-wide
// one is being pushed, and reports both: the narrow change's convergence,
// clocked from when it was made, and the mesh-wide one's. The run makes
// the mesh-wide change once without the narrow one first, so the two
// mesh-wide pushes compared come at the same point of the run (the first
// mesh-wide event costs less than those after it, narrow change or not).
//
// The narrow change is made once the mesh-wide one is a debounce old: a
// change sooner than that is coalesced with it by configuration (serve
// --debounce) and measures the debounce, not the push. InFlight says how
// many proxies the mesh-wide push had yet to reach then; with none, the
// push had ended and the phase measures nothing of interest (use more
// proxies or a shorter --debounce).
func narrowInBroad(ctx context.Context, cfg Config, t underTest, proxies []*proxy.Proxy, gen int, narrow *EventResult) (EventResult, error) {
	broad := EventResult{Name: "mesh-wide again, alone"}
	if narrow != nil {
		broad.Name = "mesh-wide, a one-tenant change made during it"
		*narrow = EventResult{Name: "weights in one tenant, during the mesh-wide push"}
	}
	ns := fleet.Tenant(1 % cfg.Tenants)
	var bw, nw []waiter
	for _, p := range proxies {
		if p.Misbehaving {
			continue
		}
		bw = append(bw, waiter{p: p, before: p.Latest(proxy.EDS)})
		if p.Namespace == ns {
			nw = append(nw, waiter{p: p, before: p.Latest(proxy.RDS)})
		}
	}
	cpu0, _ := t.usage()
	st0 := t.stages()
	t0 := time.Now()
	for i := range bw {
		bw[i].t0 = t0
	}
	if err := t.applyEvent(ctx, 2, gen); err != nil {
		return broad, err
	}
	if narrow == nil {
		return broad, converge(ctx, cfg, t, proxy.EDS, bw, &broad, cpu0, st0)
	}
	select {
	case <-time.After(time.Until(t0.Add(cfg.Debounce))):
	case <-ctx.Done():
		return broad, ctx.Err()
	}
	for _, w := range bw {
		if a := w.p.Latest(proxy.EDS); a.Count == w.before.Count || a.Version == w.before.Version {
			broad.InFlight++
		}
	}
	narrow.InFlight = broad.InFlight
	t1 := time.Now()
	for i := range nw {
		nw[i].t0 = t1
	}
	if err := t.applyEvent(ctx, 1, gen); err != nil {
		return broad, err
	}
	if err := converge(ctx, cfg, t, proxy.RDS, nw, narrow, cpu0, st0); err != nil {
		return broad, err
	}
	return broad, converge(ctx, cfg, t, proxy.EDS, bw, &broad, cpu0, st0)
}
