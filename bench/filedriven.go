package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/xdshard/xdshard/bench/baseline"
	"github.com/xdshard/xdshard/bench/fleet"
	"github.com/xdshard/xdshard/bench/proxy"
	"github.com/xdshard/xdshard/snapshot/model"
	"github.com/xdshard/xdshard/snapshot/source/manifest"
)

// The file-driven run (Config.FileDriven) measures xdshard as it runs from
// files: `xdshard serve --config DIR` in its own process, every churn event
// a tenant file rewritten atomically (DIR/NS.yaml.tmp written, then renamed
// to DIR/NS.yaml), while each baseline is given the same changes from
// memory, as in the default run.

// fileEvents are the file-driven run's events. Each names the objects that
// change; the file target rewrites the files of their namespaces, a
// baseline applies them.
func fileEvents(cfg Config) []event {
	all := func(*proxy.Proxy) bool { return true }
	return []event{
		{"idle tenant's file (endpoints)", func(gen int) []model.Change { return fleet.ScaleEndpoints(0, 0, cfg.Endpoints, gen) },
			func(p *proxy.Proxy) bool { return p.Namespace == fleet.Tenant(0) }, proxy.EDS},
		{"every tenant's file (weights)", func(gen int) []model.Change { return everyWeight(cfg, 10+gen%80) }, all, proxy.RDS},
		{"istio-system's file (mesh-wide)", func(gen int) []model.Change { return fleet.MeshWide(gen) }, all, proxy.EDS},
	}
}

// everyWeight rewrites every VirtualService of every tenant (the fleet
// gives one to three services in four) to weight.
func everyWeight(cfg Config, weight int) []model.Change {
	var out []model.Change
	for i := 0; i < cfg.Tenants; i++ {
		for j := 0; j < cfg.Services; j++ {
			if j%4 != 3 {
				out = append(out, model.Adds([]*model.Object{fleet.VirtualService(fleet.Tenant(i), fmt.Sprintf("svc-%02d", j), weight)})...)
			}
		}
	}
	return out
}

// eventsFor is the run's events: the file-driven ones or the default.
func eventsFor(cfg Config) []event {
	if cfg.FileDriven {
		return fileEvents(cfg)
	}
	return events(cfg)
}

// serveTarget is `xdshard serve --config DIR` in a child process, the
// files of DIR its whole mesh.
type serveTarget struct {
	dir, xds, admin string
	cmd             *exec.Cmd
	exited          chan struct{}
	evs             []event
	files           map[string][]*model.Object // namespace -> the objects of DIR/NS.yaml
	http            *http.Client
}

// startServe writes objs to a new directory, one file per namespace, starts
// `exe serve` on it and waits until it is ready. The child ends, and the
// directory goes, with ctx.
func startServe(ctx context.Context, cfg Config, objs []*model.Object, stderr io.Writer) (*serveTarget, error) {
	dir, err := os.MkdirTemp("", "xdshard-filedriven-")
	if err != nil {
		return nil, err
	}
	t := &serveTarget{dir: dir, evs: fileEvents(cfg), files: model.ByNamespace(objs), exited: make(chan struct{}),
		http: &http.Client{Timeout: 10 * time.Second}}
	fail := func(err error) (*serveTarget, error) {
		os.RemoveAll(dir)
		return nil, err
	}
	for ns, list := range t.files {
		b, err := encodeFile(list)
		if err != nil {
			return fail(err)
		}
		if err := os.WriteFile(filepath.Join(dir, ns+".yaml"), b, 0o644); err != nil {
			return fail(err)
		}
	}
	if t.xds, err = freePort(); err != nil {
		return fail(err)
	}
	if t.admin, err = freePort(); err != nil {
		return fail(err)
	}
	t.cmd = exec.CommandContext(ctx, cfg.Exe, "serve", "--config", dir, "--xds-addr", t.xds, "--mcp-addr", "", "--admin-addr", t.admin,
		"--log-level", "warn", "--debounce", cfg.Debounce.String(), "--max-delay", max(time.Second, cfg.Debounce).String())
	t.cmd.Stdout, t.cmd.Stderr = io.Discard, stderr // stdout: serve's banner
	t.cmd.WaitDelay = 5 * time.Second
	if err := t.cmd.Start(); err != nil {
		return fail(fmt.Errorf("starting %s serve: %w", cfg.Exe, err))
	}
	go func() {
		_ = t.cmd.Wait()
		close(t.exited)
		os.RemoveAll(dir)
	}()
	deadline := time.Now().Add(cfg.Timeout)
	for {
		resp, err := t.http.Get("http://" + t.admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return t, nil
			}
		}
		select {
		case <-t.exited:
			return nil, fmt.Errorf("xdshard serve --config %s ended before it was ready: %v", dir, t.cmd.ProcessState)
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("xdshard serve --config %s: not ready within %s", dir, cfg.Timeout)
		}
	}
}

func encodeFile(objs []*model.Object) ([]byte, error) {
	var buf bytes.Buffer
	if err := manifest.Encode(&buf, objs); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func (t *serveTarget) name() string { return "xdshard (files)" }
func (t *serveTarget) addr() string { return t.xds }

// rewrite is one file to rename into place.
type rewrite struct {
	ns    string
	objs  []*model.Object
	tmp   string
	final string
}

// prepare writes the new contents of every file the event changes to
// NS.yaml.tmp, ready to rename: the object with each changed key is
// replaced (or added). Namespaces are in order, so the renames are too.
func (t *serveTarget) prepare(index, gen int) ([]rewrite, error) {
	if index < 0 || index >= len(t.evs) {
		return nil, fmt.Errorf("no file-driven event %d", index)
	}
	changed := map[string]map[model.Key]*model.Object{}
	for _, c := range t.evs[index].changes(gen) {
		ns := c.Key.Namespace
		if c.Key.Kind == model.KindNamespace {
			ns = c.Key.Name
		}
		if changed[ns] == nil {
			changed[ns] = map[model.Key]*model.Object{}
		}
		changed[ns][c.Key] = c.Object
	}
	var out []rewrite
	for _, ns := range slices.Sorted(maps.Keys(changed)) {
		by := changed[ns]
		var list []*model.Object
		for _, o := range t.files[ns] {
			if n, ok := by[o.Key]; ok {
				delete(by, o.Key)
				if n == nil {
					continue // deleted
				}
				o = n
			}
			list = append(list, o)
		}
		for _, k := range slices.SortedFunc(maps.Keys(by), func(a, b model.Key) int { return strings.Compare(a.String(), b.String()) }) {
			if by[k] != nil {
				list = append(list, by[k])
			}
		}
		b, err := encodeFile(list)
		if err != nil {
			return nil, err
		}
		rw := rewrite{ns: ns, objs: list, final: filepath.Join(t.dir, ns+".yaml")}
		rw.tmp = rw.final + ".tmp"
		if err := os.WriteFile(rw.tmp, b, 0o644); err != nil {
			return nil, err
		}
		out = append(out, rw)
	}
	return out, nil
}

// commit renames each prepared file into place, as fast as it can, and
// returns when the first and the last rename began.
func (t *serveTarget) commit(rws []rewrite) (first, last time.Time, err error) {
	for i, rw := range rws {
		last = time.Now()
		if i == 0 {
			first = last
		}
		if err := os.Rename(rw.tmp, rw.final); err != nil {
			return first, last, err
		}
	}
	for _, rw := range rws {
		t.files[rw.ns] = rw.objs
	}
	return first, last, nil
}

func (t *serveTarget) applyEvent(_ context.Context, index, gen int) error {
	rws, err := t.prepare(index, gen)
	if err != nil {
		return err
	}
	_, _, err = t.commit(rws)
	return err
}

// usage reads the child's CPU and RSS from /proc: see procUsage.
func (t *serveTarget) usage() (float64, uint64) {
	return procUsage(t.cmd.Process.Pid)
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times: 100 on every
// Linux architecture Go supports.
const clockTicks = 100

// procUsage is a process's CPU seconds and RSS. The CPU is the sum of its
// threads' time on a CPU from /proc/PID/task/*/schedstat, in nanoseconds
// as getrusage's (the baseline child's) is, rather than the 10 ms ticks
// of /proc/PID/stat, which it falls back to; a Go server's threads do not
// exit, so the sum misses nothing.
func procUsage(pid int) (float64, uint64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (state)
	if len(f) < 22 {
		return 0, 0
	}
	utime, _ := strconv.ParseUint(f[11], 10, 64)
	stime, _ := strconv.ParseUint(f[12], 10, 64)
	rss, _ := strconv.ParseUint(f[21], 10, 64)
	cpu := float64(utime+stime) / clockTicks
	if ns, ok := threadsOnCPU(pid); ok {
		cpu = float64(ns) / 1e9
	}
	return cpu, rss * uint64(os.Getpagesize())
}

// threadsOnCPU sums the first field of each thread's schedstat.
func threadsOnCPU(pid int) (uint64, bool) {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tasks, err := os.ReadDir(dir)
	if err != nil || len(tasks) == 0 {
		return 0, false
	}
	var total uint64
	for _, task := range tasks {
		b, err := os.ReadFile(filepath.Join(dir, task.Name(), "schedstat"))
		if err != nil {
			continue // the thread ended just now
		}
		first, _, _ := strings.Cut(string(b), " ")
		n, err := strconv.ParseUint(first, 10, 64)
		if err != nil {
			return 0, false
		}
		total += n
	}
	return total, true
}

// scrape reads the child's /metrics: each sample's value by its name with
// labels, as the text format writes it.
func (t *serveTarget) scrape() map[string]float64 {
	resp, err := t.http.Get("http://" + t.admin + "/metrics")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out
}

// seriesName is a sample's metric name, without its labels.
func seriesName(series string) string {
	if i := strings.IndexByte(series, '{'); i >= 0 {
		return series[:i]
	}
	return series
}

// label is the value of one label of a sample, "" without it.
func label(series, name string) string {
	_, rest, ok := strings.Cut(series, "{"+name+`="`)
	if !ok {
		_, rest, ok = strings.Cut(series, ","+name+`="`)
	}
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(rest, `"`)
	return v
}

// metric sums every series of a counter or gauge in the child.
func (t *serveTarget) metric(name string) float64 {
	total := 0.0
	for s, v := range t.scrape() {
		if seriesName(s) == name {
			total += v
		}
	}
	return total
}

// stages reads the child's push-stage histogram: count and sum by stage.
func (t *serveTarget) stages() map[string][2]float64 {
	out := map[string][2]float64{}
	for s, v := range t.scrape() {
		st := label(s, "stage")
		switch seriesName(s) {
		case stageMetric + "_count":
			a := out[st]
			a[0] = v
			out[st] = a
		case stageMetric + "_sum":
			a := out[st]
			a[1] = v
			out[st] = a
		}
	}
	return out
}

func (t *serveTarget) counters() (uint64, uint64) {
	m := t.scrape()
	sum := func(name string) uint64 {
		total := 0.0
		for s, v := range m {
			if seriesName(s) == name {
				total += v
			}
		}
		return uint64(total)
	}
	return sum("pilot_xds_config_size_bytes_total"), sum("pilot_total_xds_rejects")
}

// heapBytes is the child's heap in use, from its Go collector.
func (t *serveTarget) heapBytes() uint64 { return uint64(t.metric("go_memstats_heap_inuse_bytes")) }

// settleTime is how long the file-driven run leaves a server quiet before
// each event, so every event starts from idle tenants (xdshard builds a
// tenant quiet for a whole debounce window at once).
func settleTime(cfg Config) time.Duration { return max(2*cfg.Debounce, 500*time.Millisecond) }

// fileChurn is churn for the file-driven run. For xdshard the new files are
// encoded and written to NS.yaml.tmp before the clock starts; the clock
// starts at the (last) rename. A baseline's clock starts as it is given
// the changes from memory, as in churn.
func fileChurn(ctx context.Context, cfg Config, t underTest, proxies []*proxy.Proxy, ev event, index, gen int) (EventResult, error) {
	res := EventResult{Name: ev.name}
	select {
	case <-time.After(settleTime(cfg)):
	case <-ctx.Done():
		return res, ctx.Err()
	}
	var ws []waiter
	for _, p := range proxies {
		if ev.affected(p) && !p.Misbehaving {
			ws = append(ws, waiter{p: p, before: p.Latest(ev.typeURL)})
		}
	}
	bytes0, _ := t.counters()
	st0 := t.stages()
	cpu0, _ := t.usage()
	var t0 time.Time
	if st, ok := t.(*serveTarget); ok {
		rws, err := st.prepare(index, gen)
		if err != nil {
			return res, err
		}
		if cfg.ServeProfile != "" {
			wait := st.profile(ctx, filepath.Join(cfg.ServeProfile, fmt.Sprintf("filedriven-%d.pprof", index+1)))
			defer func() {
				if err := wait(); err != nil {
					fmt.Fprintf(os.Stderr, "xdshard serve CPU profile: %v\n", err)
				}
			}()
			time.Sleep(50 * time.Millisecond) // the profile has begun
		}
		first, last, err := st.commit(rws)
		if err != nil {
			return res, err
		}
		t0 = last
		res.Files, res.RenameMs = len(rws), float64(last.Sub(first).Microseconds())/1000
	} else {
		t0 = time.Now()
		if err := t.applyEvent(ctx, index, gen); err != nil {
			return res, err
		}
	}
	for i := range ws {
		ws[i].t0 = t0
	}
	err := converge(ctx, cfg, t, ev.typeURL, ws, &res, cpu0, st0)
	bytes1, _ := t.counters()
	res.BytesSent = bytes1 - bytes0
	return res, err
}

// heapProfile writes a heap profile of the serve child, after a
// collection, to path.
func (t *serveTarget) heapProfile(path string) error {
	resp, err := t.http.Get("http://" + t.admin + "/debug/pprof/heap?gc=1")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("heap profile of the serve child: %s", resp.Status)
	}
	b, err := io.ReadAll(resp.Body)
	if err == nil {
		err = os.WriteFile(path, b, 0o644)
	}
	return err
}

// profileSeconds is how long a CPU profile of the serve child runs from
// just before an event's renames.
const profileSeconds = 3

// profile starts a CPU profile of the serve child (its admin port serves
// /debug/pprof on loopback) and returns a function that waits for it and
// writes it to path.
func (t *serveTarget) profile(ctx context.Context, path string) func() error {
	done := make(chan error, 1)
	go func() {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", t.admin, profileSeconds), nil)
		if err != nil {
			done <- err
			return
		}
		resp, err := (&http.Client{Timeout: (profileSeconds + 10) * time.Second}).Do(req)
		if err != nil {
			done <- err
			return
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			done <- fmt.Errorf("%s: %s", req.URL, resp.Status)
			return
		}
		b, err := io.ReadAll(resp.Body)
		if err == nil {
			err = os.WriteFile(path, b, 0o644)
		}
		done <- err
	}()
	return func() error { return <-done }
}

// writeFileDriven adds the file-driven run's own lines to the table: the
// renames behind each xdshard figure and the targets, met or
// missed, against the first go-control-plane (b) result.
func writeFileDriven(w io.Writer, rs []Result) {
	if len(rs) == 0 {
		return
	}
	x := rs[0]
	fmt.Fprintln(w)
	for _, e := range x.Events {
		if e.Files > 0 {
			fmt.Fprintf(w, "%s: %s: %d file(s) renamed into place, first to last rename %.2fms; convergence counts from the last rename\n", x.Server, e.Name, e.Files, e.RenameMs)
		}
	}
	for _, r := range rs {
		for _, e := range r.Events {
			fmt.Fprintf(w, "%s: %s: %.0f KiB sent\n", r.Server, e.Name, float64(e.BytesSent)/(1<<10))
		}
	}
	var b *Result
	for i := range rs[1:] {
		if strings.HasSuffix(rs[1+i].Server, "("+string(baseline.ModePerTenant)+")") {
			b = &rs[1+i]
			break
		}
	}
	if b == nil || len(x.Events) < 3 || len(b.Events) < 3 {
		fmt.Fprintln(w, "targets: need go-control-plane (b) and all three events")
		return
	}
	verdict := func(v, limit float64, unit string) string {
		if v <= limit {
			return fmt.Sprintf("met (%.2f%s under)", limit-v, unit)
		}
		return fmt.Sprintf("MISSED by %.2f%s", v-limit, unit)
	}
	fmt.Fprintf(w, "\ntargets, %s from files against %s from memory:\n", x.Server, b.Server)
	xe, be := x.Events[1], b.Events[1]
	cpu := math.Inf(1)
	if be.CPUSeconds > 0 {
		cpu = xe.CPUSeconds / be.CPUSeconds
	}
	fmt.Fprintf(w, "  %s: server CPU %.3fs vs %.3fs = %.2fx (target <= 1.0x): %s\n", xe.Name, xe.CPUSeconds, be.CPUSeconds, cpu, verdict(cpu, 1, "x"))
	maxMs := float64(xe.Convergence.Max.Microseconds()) / 1000
	fmt.Fprintf(w, "  %s: all %d converged within %.1fms of the last rename (target <= 300ms): %s\n", xe.Name, xe.Converged, maxMs, verdict(maxMs, 300, "ms"))
	xe, be = x.Events[0], b.Events[0]
	p99 := math.Inf(1)
	if be.Convergence.P99 > 0 {
		p99 = xe.Convergence.P99.Seconds() / be.Convergence.P99.Seconds()
	}
	fmt.Fprintf(w, "  %s: p99 %s vs %s = %.2fx (target <= 2x): %s\n", xe.Name, ms(xe.Convergence.P99), ms(be.Convergence.P99), p99, verdict(p99, 2, "x"))
}
