package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
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
		cfg := Config{Proxies: 50, Tenants: 5, Services: 3, Endpoints: 2, Delta: delta, Mix: !delta, Misbehaving: 2, Seed: 1,
			Baselines: []baseline.Mode{baseline.ModePerTenant, baseline.ModePerNode}, Debounce: 10 * time.Millisecond, Timeout: 30 * time.Second, StreamsPerConn: 20}
		rs, err := Run(context.Background(), cfg, io.Discard)
		if err != nil {
			t.Fatalf("delta=%v: %v", delta, err)
		}
		if len(rs) != 3 {
			t.Fatalf("%d results, want xdshard and two baselines", len(rs))
		}
		for _, r := range rs {
			if r.Unconverged != 0 || len(r.Events) != 3 || r.InitialSync.Max == 0 {
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
		if !strings.Contains(table.String(), "RATIO xdshard/baseline") || !strings.Contains(table.String(), "mesh-wide") {
			t.Fatalf("table lacks ratios or events:\n%s", table.String())
		}
		if err := WriteJSON(&js, cfg, rs); err != nil {
			t.Fatal(err)
		}
		var back struct{ Results []Result }
		if err := json.Unmarshal(js.Bytes(), &back); err != nil || len(back.Results) != 3 {
			t.Fatalf("JSON does not read back: %v", err)
		}
	}
}
