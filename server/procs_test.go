package server_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/xdshard/xdshard/bench/proxy"
	"github.com/xdshard/xdshard/internal/proc"
)

// The tests of a sharded deployment run each replica as its own
// `xdshard serve` process, built from this tree once per test binary, so
// a replica can be killed with SIGKILL in the middle of a push.

// xdshardBinary builds cmd/xdshard once per test binary.
func xdshardBinary(t *testing.T) string { return proc.XDShard(t, "../cmd/xdshard") }

// replicaProc is one `xdshard serve` process.
type replicaProc struct {
	id               string
	xds, admin, peer string
	cmd              *exec.Cmd
	log              *proc.Log
	dead             atomic.Bool
	exited           chan struct{}
	args             []string
	bin              string
}

// startProc starts replica id with its own free ports and args, and waits
// until it is ready.
func startProc(t *testing.T, id string, peer string, args ...string) *replicaProc {
	t.Helper()
	addrs := freeAddrs(t, 2)
	if peer == "" {
		peer = freeAddrs(t, 1)[0]
	}
	p := &replicaProc{id: id, xds: addrs[0], admin: addrs[1], peer: peer, bin: xdshardBinary(t), args: args}
	p.start(t)
	t.Cleanup(func() { p.kill() })
	return p
}

func (p *replicaProc) start(t *testing.T) {
	t.Helper()
	args := append([]string{"serve", "--replica-id", p.id, "--xds-addr", p.xds, "--mcp-addr", "127.0.0.1:0", "--admin-addr", p.admin, "--peer-addr", p.peer,
		"--debounce", "20ms", "--max-delay", "200ms", "--log-level", "debug"}, p.args...)
	p.log = &proc.Log{}
	p.cmd = exec.Command(p.bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	p.exited = make(chan struct{})
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.dead.Store(false)
	go func() { _ = p.cmd.Wait(); close(p.exited) }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + p.admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-p.exited:
			t.Fatalf("replica %s exited before it was ready:\n%s", p.id, p.log.Tail(40))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica %s not ready in 60 s:\n%s", p.id, p.log.Tail(40))
		}
	}
}

// kill ends the process with SIGKILL: no Lease release, no goodbye.
func (p *replicaProc) kill() {
	if p.dead.Swap(true) {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// terminate asks the process to stop, as Kubernetes does (SIGTERM).
func (p *replicaProc) terminate() {
	if p.dead.Swap(true) {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// metric sums a metric's samples (every label set) from /metrics.
func (p *replicaProc) metric(t *testing.T, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + p.admin + "/metrics")
	if err != nil {
		t.Fatalf("metrics of %s: %v", p.id, err)
	}
	defer resp.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		f := strings.Fields(rest[strings.LastIndex(rest, "}")+1:])
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err == nil {
			sum += v
		}
	}
	return sum
}

// deployment is the replicas and the proxies spread over them.
type deployment struct {
	t       *testing.T
	procs   []*replicaProc
	mu      sync.Mutex
	proxies []*fleetProxy
	conns   []*grpc.ClientConn
	closed  bool // close ran: a proxy's redial after it gets no connection
}

// fleetProxy is a simulated sidecar that first dials its home replica
// and, whenever its stream ends, dials again through "the Service": a
// live replica at random.
type fleetProxy struct {
	*proxy.Proxy
	tenant string
	home   int
}

func (d *deployment) live() []*replicaProc {
	var out []*replicaProc
	for _, p := range d.procs {
		if !p.dead.Load() {
			out = append(out, p)
		}
	}
	return out
}

func (d *deployment) connect(ctx context.Context, tenant string, home int, delta bool) *fleetProxy {
	d.mu.Lock()
	fp := &fleetProxy{Proxy: proxy.New(tenant, fmt.Sprintf("p%d", len(d.proxies)), delta), tenant: tenant, home: home}
	d.proxies = append(d.proxies, fp)
	d.mu.Unlock()
	first := true
	pick := func() string {
		if first && !d.procs[home].dead.Load() {
			first = false
			return d.procs[home].xds
		}
		first = false
		live := d.live()
		if len(live) == 0 {
			return d.procs[home].xds
		}
		return live[rand.IntN(len(live))].xds
	}
	dial := func(addr string) (*grpc.ClientConn, error) {
		c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err == nil {
			d.mu.Lock()
			defer d.mu.Unlock()
			if d.closed {
				// The test is ending (close runs before its context's
				// cancel): a connection dialled now would outlive it.
				c.Close()
				return nil, errors.New("the deployment is closed")
			}
			d.conns = append(d.conns, c)
		}
		return c, err
	}
	go fp.Redial(ctx, pick, dial)
	return fp
}

func (d *deployment) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	for _, c := range d.conns {
		c.Close()
	}
}

// builds sums xdshard_tenant_builds_total over the live replicas.
func (d *deployment) builds() float64 {
	n := 0.0
	for _, p := range d.live() {
		n += p.metric(d.t, "xdshard_tenant_builds_total")
	}
	return n
}

// versions is what every proxy holds: proxy -> type -> version.
func (d *deployment) versions() map[*fleetProxy]map[string]string {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[*fleetProxy]map[string]string{}
	for _, p := range d.proxies {
		out[p] = map[string]string{}
		for _, typ := range proxy.Types {
			out[p][typ] = p.Latest(typ).Version
		}
	}
	return out
}

// agreed says whether every proxy holds every type and the proxies of
// each tenant hold identical versions, on whichever replica.
func (d *deployment) agreed() bool {
	byTenant := map[string]map[string]string{}
	for p, vs := range d.versions() {
		for typ, v := range vs {
			if v == "" {
				return false
			}
			if byTenant[p.tenant] == nil {
				byTenant[p.tenant] = map[string]string{}
			}
			if w, ok := byTenant[p.tenant][typ]; ok && w != v {
				return false
			}
			byTenant[p.tenant][typ] = v
		}
	}
	return true
}

// onLive says whether every proxy streams from a live replica.
func (d *deployment) onLive() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, p := range d.proxies {
		ok := false
		for _, r := range d.live() {
			if p.Server() == r.xds {
				ok = true
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// anomalies fails the test if any proxy ever saw a version go back, an
// empty state of the world, or another tenant's cluster.
func (d *deployment) anomalies() {
	d.t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, p := range d.proxies {
		if b, e, f := p.Anomalies(); b+e+f > 0 {
			d.t.Fatalf("proxy %s of %s saw %d versions go back, %d empty states, %d clusters of another tenant", p.Server(), p.tenant, b, e, f)
		}
	}
}

// streamsOn counts the proxies whose current stream is on replica p.
func (d *deployment) streamsOn(p *replicaProc) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, fp := range d.proxies {
		if fp.Server() == p.xds {
			n++
		}
	}
	return n
}

// waitFor polls cond until it holds and returns how long that took; it
// fails only on a hang (hangCheck, or expected if longer).
func (d *deployment) waitFor(what string, expected time.Duration, cond func() bool) time.Duration {
	d.t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > max(expected, hangCheck) {
			var logs []string
			for _, p := range d.procs {
				logs = append(logs, fmt.Sprintf("--- %s (dead %v):\n%s", p.id, p.dead.Load(), p.log.Tail(15)))
			}
			d.t.Fatalf("%s: not within %s: it hangs\n%s", what, max(expected, hangCheck), strings.Join(logs, "\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	took := time.Since(start)
	if took > expected {
		d.t.Logf("%s took %s, longer than the %s expected (logged, not asserted: speed is the bench's)", what, took.Round(time.Millisecond), expected)
	}
	return took
}

// hangCheck is how long a wait may take before a test calls it a hang.
// Waits say what they expect; a wait longer than that is logged, never
// failed, since a loaded machine may take it: speed is measured by
// xdshard bench, not asserted by tests.
const hangCheck = 3 * time.Minute

// synced waits for ch (a replica's or a proxy's Synced), failing only on
// a hang.
func synced(t testing.TB, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(hangCheck):
		t.Fatalf("not synced within %s (hang check)", hangCheck)
	}
}
