package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"

	"github.com/xdshard/xdshard/bench/baseline"
	"github.com/xdshard/xdshard/bench/fleet"
)

// The server under test can run in a child process, so its CPU and RSS are
// measured apart from the load generator's: the parent starts
// `EXE bench-server CONFIG SERVER`, reads "addr HOST:PORT", then sends
// "apply EVENT GEN" (answered "ok"), "stats" (answered "stats CPU RSS HEAP
// GOROUTINES LIVE": LIVE the heap's allocated objects, HEAP its spans in use), "gc" (a collection; answered "gc done"), "heap FILE" (a
// heap profile of the server), "profile FILE"
// and "profile -" (start and stop a CPU profile of the server) and
// "metric NAME" (answered "metric VALUE", the sum of a counter's or gauge's
// series). With Config.Shard set, the child is one replica of a sharded
// deployment (see replicas.go).

// childTarget is a server under test in a child process.
type childTarget struct {
	label, address string
	cmd            *exec.Cmd
	in             io.WriteCloser
	out            *bufio.Scanner
	heap           uint64 // the server's heap in use (spans) at the last stats
	live           uint64 // of which allocated to objects (live after a collection)
	goroutines     int    // and its goroutines
}

func startChild(ctx context.Context, exe string, cfg Config, server string) (*childTarget, error) {
	js, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, exe, "bench-server", string(js), server)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	outPipe, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the server process: %w", err)
	}
	c := &childTarget{cmd: cmd, in: in, out: bufio.NewScanner(outPipe)}
	line, err := c.read()
	if err != nil {
		return nil, err
	}
	parts := strings.Fields(line)
	if len(parts) != 3 || parts[0] != "addr" {
		return nil, fmt.Errorf("server process said %q, want \"addr HOST:PORT NAME\"", line)
	}
	c.address, c.label = parts[1], strings.ReplaceAll(parts[2], "_", " ")
	go func() { <-ctx.Done(); in.Close(); _ = cmd.Wait() }()
	return c, nil
}

func (c *childTarget) read() (string, error) {
	if !c.out.Scan() {
		if err := c.out.Err(); err != nil {
			return "", err
		}
		return "", fmt.Errorf("server process ended")
	}
	return c.out.Text(), nil
}

func (c *childTarget) call(cmd string) (string, error) {
	if _, err := fmt.Fprintln(c.in, cmd); err != nil {
		return "", err
	}
	return c.read()
}

// profile starts a CPU profile of the server into path, or stops it ("-").
func (c *childTarget) profile(path string) error {
	if path != "-" {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
	}
	line, err := c.call("profile " + path)
	if err == nil && line != "profile ok" {
		err = fmt.Errorf("server process: %s", line)
	}
	return err
}

// heapProfile writes a heap profile of the server to path.
func (c *childTarget) heapProfile(path string) error {
	line, err := c.call("heap " + path)
	if err == nil && line != "heap ok" {
		err = fmt.Errorf("server process: %s", line)
	}
	return err
}

func (c *childTarget) name() string { return c.label }
func (c *childTarget) addr() string { return c.address }

func (c *childTarget) applyEvent(_ context.Context, index, gen int) error {
	line, err := c.call(fmt.Sprintf("apply %d %d", index, gen))
	if err != nil || line != "ok" {
		return fmt.Errorf("server process: %q %v", line, err)
	}
	return nil
}

func (c *childTarget) stages() map[string][2]float64 {
	line, err := c.call("stages")
	if err != nil {
		return nil
	}
	var out map[string][2]float64
	if json.Unmarshal([]byte(strings.TrimPrefix(line, "stages ")), &out) != nil {
		return nil
	}
	return out
}

func (c *childTarget) counters() (bytes, nacks uint64) {
	line, err := c.call("counters")
	if err == nil {
		_, _ = fmt.Sscanf(line, "counters %d %d", &bytes, &nacks)
	}
	return bytes, nacks
}

// metric reads the sum of a counter's or gauge's series in the child.
func (c *childTarget) metric(name string) (float64, error) {
	line, err := c.call("metric " + name)
	if err != nil {
		return 0, err
	}
	v, ok := strings.CutPrefix(line, "metric ")
	if !ok {
		return 0, fmt.Errorf("server process: %q", line)
	}
	return strconv.ParseFloat(v, 64)
}

func (c *childTarget) usage() (cpu float64, rss uint64) {
	line, err := c.call("stats")
	if err != nil {
		return 0, 0
	}
	f := strings.Fields(line)
	if len(f) >= 4 {
		cpu, _ = strconv.ParseFloat(f[1], 64)
		rss, _ = strconv.ParseUint(f[2], 10, 64)
		c.heap, _ = strconv.ParseUint(f[3], 10, 64)
	}
	if len(f) >= 5 {
		c.goroutines, _ = strconv.Atoi(f[4])
	}
	if len(f) >= 6 {
		c.live, _ = strconv.ParseUint(f[5], 10, 64)
	}
	return cpu, rss
}

// ServeChild is the child side: it serves one server under test over the
// fleet in cfgJSON until its standard input closes.
func ServeChild(ctx context.Context, cfgJSON, server string, in io.Reader, out io.Writer) error {
	var cfg Config
	if err := json.Unmarshal([]byte(cfgJSON), &cfg); err != nil {
		return fmt.Errorf("bench-server config: %w", err)
	}
	objs := fleet.Generate(fleet.Spec{Tenants: cfg.Tenants, Services: cfg.Services, Endpoints: cfg.Endpoints, Seed: cfg.Seed})
	var t target
	var err error
	switch {
	case server == "xdshard":
		t, err = startXDShard(ctx, objs, cfg, cfg.Shard)
	default:
		t, err = startBaseline(ctx, objs, baseline.Mode(server), cfg)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "addr %s %s\n", t.addr(), strings.ReplaceAll(t.name(), " ", "_"))
	evs := eventsFor(cfg)
	var profile *os.File
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 3 && f[0] == "apply":
			i, _ := strconv.Atoi(f[1])
			gen, _ := strconv.Atoi(f[2])
			if i < 0 || i >= len(evs) {
				fmt.Fprintln(out, "error: no such event")
				continue
			}
			if err := t.apply(ctx, evs[i].changes(gen)); err != nil {
				fmt.Fprintf(out, "error: %v\n", err)
				continue
			}
			fmt.Fprintln(out, "ok")
		case len(f) == 1 && f[0] == "stages":
			var st map[string][2]float64
			if s, ok := t.(stager); ok {
				st = s.stages()
			}
			b, _ := json.Marshal(st)
			fmt.Fprintf(out, "stages %s\n", b)
		case len(f) == 1 && f[0] == "counters":
			var b, n uint64
			if c, ok := t.(counter); ok {
				b, n = c.counters()
			}
			fmt.Fprintf(out, "counters %d %d\n", b, n)
		case len(f) == 2 && f[0] == "metric":
			v := 0.0
			if m, ok := t.(metricReader); ok {
				v = m.metric(f[1])
			}
			fmt.Fprintf(out, "metric %g\n", v)
		case len(f) == 1 && f[0] == "stats":
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			fmt.Fprintf(out, "stats %f %d %d %d %d\n", cpuSeconds(), rssBytes(), ms.HeapInuse, runtime.NumGoroutine(), ms.HeapAlloc)
		case len(f) == 2 && f[0] == "profile":
			// The server's CPU profile: "profile FILE" starts it, "profile
			// -" stops it.
			var err error
			if f[1] == "-" {
				pprof.StopCPUProfile()
				if profile != nil {
					err = profile.Close()
					profile = nil
				}
			} else if profile, err = os.Create(f[1]); err == nil {
				if err = pprof.StartCPUProfile(profile); err != nil {
					profile.Close()
					profile = nil
				}
			}
			if err != nil {
				fmt.Fprintf(out, "error: %v\n", err)
				continue
			}
			fmt.Fprintln(out, "profile ok")
		case len(f) == 2 && f[0] == "heap":
			// A heap profile of the server, after a collection.
			settle()
			hf, err := os.Create(f[1])
			if err == nil {
				err = pprof.WriteHeapProfile(hf)
				if cerr := hf.Close(); err == nil {
					err = cerr
				}
			}
			if err != nil {
				fmt.Fprintf(out, "error: %v\n", err)
				continue
			}
			fmt.Fprintln(out, "heap ok")
		case len(f) == 1 && f[0] == "gc":
			settle()
			fmt.Fprintln(out, "gc done")
		default:
			fmt.Fprintf(out, "error: unknown command %q\n", sc.Text())
		}
	}
	return sc.Err()
}

// settle collects twice: what sync.Pools hold (grpc-go's buffer pool keeps
// every response buffer it was given back) survives one collection in the
// pools' victim caches and goes with the second. With one, a proxy's
// share of the heap swung from 8.7 to 22.9 KiB between runs of the same
// delta fleet, by whether the initial sync's response buffers were still
// pooled.
func settle() {
	runtime.GC()
	runtime.GC()
}

// rssBytes reads this process's resident set size from /proc.
func rssBytes() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb * 1024
		}
	}
	return 0
}
