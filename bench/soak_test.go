package bench

import (
	"context"
	"os"
	"testing"
	"time"
)

// soakCheck runs a soak of cfg and checks what a soak promises: every
// well-behaved proxy converged on every change, the server's goroutines
// are as many at the end as at the start, and its heap, once every
// tenant's history filled, stayed within slack of where it was.
func soakCheck(t *testing.T, cfg Config, deadline time.Duration) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Exe = exe
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	res, err := Run(ctx, cfg, testLog{t})
	if err != nil || len(res) != 1 || res[0].Soak == nil {
		t.Fatalf("soak: %d results, %v", len(res), err)
	}
	sr := res[0].Soak
	t.Logf("soak: %+v", *sr)
	if sr.Unconverged != 0 || sr.Checked == 0 || sr.Changes < cfg.Tenants {
		t.Fatalf("soak: %d of %d convergences missed over %d changes; want none missed over at least a round", sr.Unconverged, sr.Checked, sr.Changes)
	}
	if sr.GoroutinesEnd > sr.GoroutinesStart+8 {
		t.Fatalf("soak: goroutines %d at the start, %d at the end: a leak", sr.GoroutinesStart, sr.GoroutinesEnd)
	}
	if base := sr.HeapWarm; base > 0 && sr.HeapEnd > base+base/4+8<<20 {
		t.Fatalf("soak: heap %d bytes once the histories filled, %d at the end: it grows", base, sr.HeapEnd)
	}
}

// TestSoakTiny runs the soak tiny, in every run: 40 proxies (two NACK
// everything, two read slowly) and endpoint churn at 40 changes a second
// over 4 tenants for 4 s.
func TestSoakTiny(t *testing.T) {
	soakCheck(t, Config{Proxies: 40, Tenants: 4, Services: 3, Endpoints: 2, Seed: 1, Misbehaving: 2,
		Debounce: 10 * time.Millisecond, Timeout: 20 * time.Second, StreamsPerConn: 10, Rate: 40, Soak: 4 * time.Second}, 90*time.Second)
}

// TestSoak is the soak, in the long suite (LONG=1 scripts/test.sh,
// about 13 minutes): 10,000 streams of 100 tenants, 1% of them NACKing
// everything and 1% reading slowly, endpoint churn at 10 changes a second
// for 10 minutes.
func TestSoak(t *testing.T) {
	if os.Getenv("LONG") == "" {
		t.Skip("the long suite: LONG=1 scripts/test.sh")
	}
	if raceEnabled {
		t.Skip("too slow under the race detector; LONG=1 scripts/test.sh runs it apart, without")
	}
	soakCheck(t, Config{Proxies: 10000, Tenants: 100, Services: 20, Endpoints: 5, Seed: 1, Misbehaving: 100,
		Debounce: 100 * time.Millisecond, Timeout: 2 * time.Minute, StreamsPerConn: 250, Rate: 10, Soak: 10 * time.Minute}, 18*time.Minute)
}
