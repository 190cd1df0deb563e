package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xdshard/xdshard/bench/baseline"
)

// TestTinyBench runs a small fleet against xdshard and go-control-plane
// (per-tenant snapshots), SotW and delta, and checks that every proxy
// synced and converged on every event and the reports are well-formed.
// Timings are not asserted: they are for `xdshard bench`, not tests.
func TestTinyBench(t *testing.T) {
	for _, delta := range []bool{false, true} {
		cfg := Config{Proxies: 50, Tenants: 5, Services: 3, Endpoints: 2, Delta: delta, Mix: !delta, Misbehaving: 2, Seed: 1, Rate: 50, RateEvents: 5,
			Baselines: []baseline.Mode{baseline.ModePerTenant, baseline.ModePerNode}, Debounce: 10 * time.Millisecond, Timeout: 30 * time.Second, StreamsPerConn: 20}
		rs, err := Run(context.Background(), cfg, io.Discard)
		if err != nil {
			t.Fatalf("delta=%v: %v", delta, err)
		}
		if len(rs) != 3 {
			t.Fatalf("%d results, want xdshard and two baselines", len(rs))
		}
		for _, r := range rs {
			if r.Unconverged != 0 || len(r.Events) != 7 || r.InitialSync.Max == 0 || r.BytesSent == 0 || r.NACKs == 0 {
				t.Fatalf("%s: %+v", r.Server, r)
			}
			for _, e := range r.Events {
				if e.Affected == 0 || e.Converged != e.Affected {
					t.Fatalf("%s %s: %d of %d converged", r.Server, e.Name, e.Converged, e.Affected)
				}
			}
		}
		var table, js bytes.Buffer
		if err := WriteTable(&table, cfg, rs); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(table.String(), "RATIO xdshard/baseline") || !strings.Contains(table.String(), "mesh-wide") ||
			!strings.Contains(table.String(), "one tenant during mesh-wide") {
			t.Fatalf("table lacks ratios or events:\n%s", table.String())
		}
		if err := WriteJSON(&js, cfg, rs); err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		if err := WriteHTML(dir, cfg, rs); err != nil {
			t.Fatal(err)
		}
		html, err := os.ReadFile(filepath.Join(dir, "index.html"))
		if err != nil || bytes.Count(html, []byte("<svg")) != 8 || bytes.Count(html, []byte("<polyline")) != 24 || !bytes.Contains(html, []byte("mesh-wide")) {
			t.Fatalf("HTML report: want 8 plots (initial sync and 7 events) with 3 servers each and the table (%v)", err)
		}
		var back struct{ Results []Result }
		if err := json.Unmarshal(js.Bytes(), &back); err != nil || len(back.Results) != 3 {
			t.Fatalf("JSON does not read back: %v", err)
		}
	}
}

// TestServeChildProtocol drives the child side of an isolated run over
// pipes, as `xdshard bench` does over a child's standard input and output.
func TestServeChildProtocol(t *testing.T) {
	cfg := Config{Proxies: 10, Tenants: 2, Services: 2, Endpoints: 1, Debounce: 10 * time.Millisecond, Seed: 1}
	js, _ := json.Marshal(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- ServeChild(ctx, string(js), "xdshard", inR, outW); outW.Close() }()
	c := &childTarget{in: inW, out: bufio.NewScanner(outR)}
	line, err := c.read()
	if err != nil || !strings.HasPrefix(line, "addr 127.0.0.1:") {
		t.Fatalf("first line %q (%v), want addr 127.0.0.1:PORT", line, err)
	}
	if err := c.applyEvent(ctx, 2, 1); err != nil {
		t.Fatal(err)
	}
	if cpu, rss := c.usage(); cpu <= 0 || rss == 0 {
		t.Fatalf("stats: cpu %v rss %v", cpu, rss)
	}
	if line, _ := c.call("apply 9 1"); !strings.HasPrefix(line, "error") {
		t.Fatalf("an unknown event was accepted: %q", line)
	}
	inW.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
