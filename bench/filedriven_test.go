package bench

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xdshard/xdshard/bench/baseline"
)

// TestFileDriven runs the file-driven mode tiny, end to end: the real
// `xdshard serve --config DIR` (built here) against go-control-plane (b)
// in its own process, and checks every proxy converged on every event, the
// files were renamed into place (every tenant's, one each, for the
// weights) and the report has its ratios.
func TestFileDriven(t *testing.T) {
	if testing.Short() {
		t.Skip("builds cmd/xdshard")
	}
	exe := filepath.Join(t.TempDir(), "xdshard")
	if out, err := exec.Command("go", "build", "-o", exe, "../cmd/xdshard").CombinedOutput(); err != nil {
		t.Fatalf("go build ../cmd/xdshard: %v\n%s", err, out)
	}
	prof := t.TempDir()
	cfg := Config{ServeProfile: prof, Proxies: 20, Tenants: 4, Services: 3, Endpoints: 2, Seed: 1, Exe: exe, FileDriven: true,
		Baselines: []baseline.Mode{baseline.ModePerTenant}, Debounce: 10 * time.Millisecond, Timeout: 20 * time.Second, StreamsPerConn: 10}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	rs, err := Run(ctx, cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 || rs[0].Server != "xdshard (files)" || !rs[1].Isolated {
		t.Fatalf("results: %+v", rs)
	}
	for _, r := range rs {
		if r.Unconverged != 0 || len(r.Events) != 3 || r.InitialSync.Max == 0 || r.BytesSent == 0 || r.RSSBytes == 0 {
			t.Fatalf("%s: %+v", r.Server, r)
		}
		for i, e := range r.Events {
			want := []int{cfg.Proxies / cfg.Tenants, cfg.Proxies, cfg.Proxies}[i]
			if e.Affected != want || e.Converged != e.Affected || e.BytesSent == 0 {
				t.Fatalf("%s %s: %d of %d converged, want %d", r.Server, e.Name, e.Converged, e.Affected, want)
			}
		}
	}
	x := rs[0]
	if x.HeapBytes == 0 || x.Events[1].Files != cfg.Tenants || x.Events[0].Files != 1 || x.Events[2].Files != 1 {
		t.Fatalf("xdshard: heap %d, files renamed %d %d %d", x.HeapBytes, x.Events[0].Files, x.Events[1].Files, x.Events[2].Files)
	}
	if _, ok := x.Events[1].Stages["build"]; !ok {
		t.Fatalf("no build stage read from /metrics: %+v", x.Events[1].Stages)
	}
	if st, err := os.Stat(filepath.Join(prof, "filedriven-2.pprof")); err != nil || st.Size() == 0 {
		t.Fatalf("no CPU profile of the serve child: %v", err)
	}
	var table bytes.Buffer
	if err := WriteTable(&table, cfg, rs); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"RATIO xdshard/baseline", "every tenant's file", "istio-system's file", "targets"} {
		if !strings.Contains(table.String(), want) {
			t.Fatalf("table lacks %q:\n%s", want, table.String())
		}
	}
	t.Log("\n" + table.String())
}
