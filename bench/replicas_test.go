package bench

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain lets the test binary be the server child a sharded run starts
// (`EXE bench-server CONFIG SERVER`), as the xdshard binary is for
// `xdshard bench`.
func TestMain(m *testing.M) {
	if len(os.Args) == 4 && os.Args[1] == "bench-server" {
		if err := ServeChild(context.Background(), os.Args[2], os.Args[3], os.Stdin, os.Stdout); err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	code := m.Run()
	if code == 0 {
		// Every run's servers, proxies and child processes end with it.
		if err := goleak.Find(); err != nil {
			os.Stderr.WriteString("goleak: " + err.Error() + "\n")
			code = 1
		}
	}
	os.Exit(code)
}

// TestReplicasBench runs the sharded mode tiny, end to end through child
// processes: one replica, then two sharing six tenants, twenty proxies
// (SotW and delta), the three events, then kill -9 of one replica and a
// change after it. Timings are not asserted; costs and convergence are.
func TestReplicasBench(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Proxies: 20, Tenants: 6, Services: 3, Endpoints: 2, Mix: true, Seed: 1, Exe: exe,
		Debounce: 10 * time.Millisecond, Timeout: 20 * time.Second, StreamsPerConn: 5, Replicas: 2, KillReplica: true}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	single, err := Run(ctx, cfg, testLog{t})
	if err != nil || len(single) != 1 {
		t.Fatalf("one replica: %d results, %v", len(single), err)
	}
	res, err := RunReplicas(ctx, cfg, testLog{t})
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := WriteReplicas(&out, cfg, &single[0], res, Capacity{ChangeRate: 0.1, Cores: 2, MemoryBytes: 4 << 30}); err != nil {
		t.Fatal(err)
	}
	t.Log(out.String())

	if res.Unconverged != 0 || len(res.Events) != 3 || res.InitialSync.Max == 0 {
		t.Fatalf("%d unconverged, %d events, initial sync %s", res.Unconverged, len(res.Events), res.InitialSync.Max)
	}
	for i, e := range res.Events {
		if e.Affected == 0 || e.Converged != e.Affected {
			t.Fatalf("%s: %d of %d proxies converged", e.Name, e.Converged, e.Affected)
		}
		if i < 2 && e.Builds != 1 {
			t.Fatalf("%s: %g builds summed over the replicas, want 1", e.Name, e.Builds)
		}
	}
	owned := 0.0
	for _, p := range res.Per {
		owned += p.Owned
		if p.Streams == 0 || p.Owned == 0 {
			t.Fatalf("replica %s holds %d streams and builds %g tenants: the run is not spread", p.ID, p.Streams, p.Owned)
		}
	}
	if mw := res.Events[2]; mw.Affected != cfg.Proxies || mw.Builds != owned || mw.PeerBytes == 0 {
		t.Fatalf("mesh-wide: %d proxies affected, %g builds for %g tenants, %g peer bytes", mw.Affected, mw.Builds, owned, mw.PeerBytes)
	}
	if res.Backwards+res.Empty+res.Foreign != 0 {
		t.Fatalf("proxies saw %d versions come back, %d empty CDS or LDS, %d foreign clusters", res.Backwards, res.Empty, res.Foreign)
	}
	fo := res.Failover
	if fo == nil || fo.Victims == 0 || fo.Synced != fo.Victims || fo.Unverified != 0 {
		t.Fatalf("failover: %+v", fo)
	}
	if fo.Adopted == 0 || fo.AdoptionBuilds < fo.Adopted {
		t.Fatalf("the survivor adopted %g of the killed replica's tenants with %g builds", fo.Adopted, fo.AdoptionBuilds)
	}
	if len(fo.After) == 0 {
		t.Fatal("no change after the kill")
	}
	for _, a := range fo.After {
		if a.Affected == 0 || a.Converged != a.Affected {
			t.Fatalf("%s: %d of %d proxies converged", a.Name, a.Converged, a.Affected)
		}
		// A live owner's tenant costs one build; one the killed replica
		// owned costs one on each survivor with clients of it (adopted):
		// with two replicas, one too.
		if a.Builds != 1 {
			t.Fatalf("%s (owner %s): %g builds", a.Name, a.Owner, a.Builds)
		}
	}
	for _, want := range []string{"mesh-wide change: total CPU with 2 replicas / with 1", "kill -9 of r1: ", "capacity model", "P = 1000000"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("report lacks %q", want)
		}
	}

	// The symmetric deployment: every replica builds every tenant.
	sym, err := RunSymmetric(ctx, cfg, testLog{t})
	if err != nil {
		t.Fatal(err)
	}
	if sym.Unconverged != 0 || sym.Failover != nil || !sym.Symmetric {
		t.Fatalf("symmetric: %d unconverged, failover %v", sym.Unconverged, sym.Failover)
	}
	for i, e := range sym.Events {
		if i < 2 && e.Builds != 2 {
			t.Fatalf("symmetric %s: %g builds, want one per replica", e.Name, e.Builds)
		}
		if e.PeerBytes != 0 {
			t.Fatalf("symmetric %s: %g peer bytes", e.Name, e.PeerBytes)
		}
	}
	if mw := sym.Events[2]; mw.Builds != 2*owned {
		t.Fatalf("symmetric mesh-wide: %g builds, want every tenant on each replica (%g)", mw.Builds, 2*owned)
	}
	out.Reset()
	if err := WriteSymmetric(&out, res, sym); err != nil {
		t.Fatal(err)
	}
	t.Log(out.String())
	if !strings.Contains(out.String(), "sharded/symmetric") {
		t.Fatal("the comparison lacks its ratio")
	}
	if !strings.Contains(out.String(), "the capacity model above uses the sharded figures; in this run symmetric replicas were cheaper") {
		t.Fatal("the comparison does not say where symmetric replicas were cheaper")
	}
}

// TestHomeSpreadsTenants checks that every tenant's proxies reach every
// replica and that the replicas hold about as many proxies each.
func TestHomeSpreadsTenants(t *testing.T) {
	for _, c := range []struct{ proxies, tenants, n int }{{20, 6, 2}, {300, 20, 3}, {3000, 100, 3}, {1000, 100, 4}} {
		reach := map[[2]int]bool{}
		count := make([]int, c.n)
		for i := 0; i < c.proxies; i++ {
			h := home(i, c.tenants, c.n)
			reach[[2]int{i % c.tenants, h}] = true
			count[h]++
		}
		if len(reach) != c.tenants*c.n {
			t.Fatalf("%+v: %d (tenant, replica) pairs reached, want %d", c, len(reach), c.tenants*c.n)
		}
		for _, k := range count {
			if k < c.proxies/c.n-c.tenants || k > c.proxies/c.n+c.tenants {
				t.Fatalf("%+v: replicas hold %v proxies", c, count)
			}
		}
	}
}

type testLog struct{ t *testing.T }

func (w testLog) Write(b []byte) (int, error) {
	if s := strings.TrimSpace(string(b)); s != "" {
		w.t.Log(s)
	}
	return len(b), nil
}
