package server_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/xdshard/xdshard/internal/echo"
	"github.com/xdshard/xdshard/server"
	"github.com/xdshard/xdshard/snapshot/model"
	"github.com/xdshard/xdshard/snapshot/source/manifest"
)

// meshYAML is a two-tenant mesh: in tenant shop, echo has subsets v1 and
// v2 split by weight, and a header sends marked requests to v2. Tenant
// other has no echo at all.
const meshYAML = `apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Namespace
metadata: {name: other}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: echo, namespace: shop}
spec:
  hosts: [echo.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 7070, name: grpc, protocol: GRPC}]
  endpoints:
    - {address: 127.0.0.1, ports: {grpc: %d}, labels: {version: v1}}
    - {address: 127.0.0.1, ports: {grpc: %d}, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo, namespace: shop}
spec:
  host: echo.shop.svc.cluster.local
  subsets:
    - {name: v1, labels: {version: v1}}
    - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo, namespace: shop}
spec:
  hosts: [echo.shop.svc.cluster.local]
  http:
    - match: [{headers: {x-canary: {exact: "true"}}}]
      route: [{destination: {host: echo.shop.svc.cluster.local, subset: v2}}]
    - route:
        - {destination: {host: echo.shop.svc.cluster.local, subset: v1}, weight: %d}
        - {destination: {host: echo.shop.svc.cluster.local, subset: v2}, weight: %d}
`

const echoTarget = "echo.shop.svc.cluster.local:7070"

func writeMesh(t *testing.T, path string, v1, v2 *echo.Backend, w1, w2 int) {
	t.Helper()
	tmp := path + ".tmp~"
	if err := os.WriteFile(tmp, []byte(fmt.Sprintf(meshYAML, v1.Addr.Port, v2.Addr.Port, w1, w2)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// startReplica starts the replica `xdshard serve --config dir` runs, on
// free loopback ports, with a short debounce.
func startReplica(t *testing.T, dir string) *server.Replica {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	return startWith(t, manifest.NewSource(dir, log), log)
}

// startWith starts the replica over src, on free loopback ports with an
// admin server and a short debounce, and waits until it is ready.
func startWith(t *testing.T, src model.Source, log *slog.Logger) *server.Replica {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r, err := server.Start(ctx, server.Config{
		Source: src, XDSAddr: "127.0.0.1:0", MCPAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
		Debounce: 20 * time.Millisecond, MaxDelay: 200 * time.Millisecond, History: 5, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); r.Close() })
	select {
	case <-r.Synced():
	case <-time.After(30 * time.Second):
		t.Fatal("the replica never became ready")
	}
	return r
}

// split makes n RPCs and returns the fraction answered by v2. Every RPC
// must succeed.
func split(t *testing.T, ctx context.Context, conn *grpc.ClientConn, n int) float64 {
	t.Helper()
	v2 := 0
	for i := 0; i < n; i++ {
		b, err := echo.Who(ctx, conn)
		if err != nil {
			t.Fatalf("RPC %d failed: %v", i, err)
		}
		if b == "v2" {
			v2++
		}
	}
	return float64(v2) / float64(n)
}

func TestGRPCXDSClientFollowsVirtualService(t *testing.T) {
	v1, v2 := echo.Start(t, "v1", "127.0.0.1:0"), echo.Start(t, "v2", "127.0.0.1:0")
	dir := t.TempDir()
	file := filepath.Join(dir, "mesh.yaml")
	writeMesh(t, file, v1, v2, 80, 20)
	r := startReplica(t, dir)

	conn := dialXDS(t, r.XDSAddr(), "shop", echoTarget)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	routesLikeMeshYAML(t, ctx, conn, 1000, 0.05)

	// Edit the config: new weights take effect with no failed RPC
	// meanwhile. (How fast is the bench's to measure, not a test's: the
	// time is logged.)
	writeMesh(t, file, v1, v2, 20, 80)
	edited := time.Now()
	for {
		b, err := echo.Who(ctx, conn)
		if err != nil {
			t.Fatalf("RPC failed during the config change: %v", err)
		}
		if b == "v2" && split(t, ctx, conn, 50) > 0.5 {
			break
		}
		if time.Since(edited) > 10*time.Second {
			t.Fatal("new weights not in effect after 10 s")
		}
	}
	took := time.Since(edited)
	t.Logf("new weights took effect %v after the edit", took)
	if got := split(t, ctx, conn, 1000); math.Abs(got-0.80) > 0.05 {
		t.Fatalf("20/80 split sent %.1f%% to v2, want 80%% ±5", got*100)
	}
}

func TestGRPCXDSClientOfAnotherTenantCannotResolve(t *testing.T) {
	v1, v2 := echo.Start(t, "v1", "127.0.0.1:0"), echo.Start(t, "v2", "127.0.0.1:0")
	dir := t.TempDir()
	writeMesh(t, filepath.Join(dir, "mesh.yaml"), v1, v2, 80, 20)
	r := startReplica(t, dir)

	conn := dialXDS(t, r.XDSAddr(), "other", echoTarget)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if b, err := echo.Who(ctx, conn); err == nil {
		t.Fatalf("a client of tenant other reached %s's backend %s", echoTarget, b)
	} else {
		t.Logf("resolution failed as it should: %v", err)
	}
	if v1.Calls()+v2.Calls() != 0 {
		t.Fatal("a backend of tenant shop was called by tenant other")
	}
}

// routesLikeMeshYAML checks a client of meshYAML's echo at 80/20: the
// first RPC (which waits for LDS, RDS, CDS and EDS), the split over n RPCs
// within tolerance, and the header route to v2.
func routesLikeMeshYAML(t *testing.T, ctx context.Context, conn *grpc.ClientConn, n int, tolerance float64) {
	t.Helper()
	if _, err := echo.Who(ctx, conn); err != nil {
		t.Fatalf("first RPC through xDS: %v", err)
	}
	if got := split(t, ctx, conn, n); math.Abs(got-0.20) > tolerance {
		t.Fatalf("80/20 split sent %.1f%% to v2, want 20%% ±%.0f", got*100, tolerance*100)
	}
	for i := 0; i < 10; i++ {
		if b, err := echo.Who(ctx, conn, "x-canary", "true"); err != nil || b != "v2" {
			t.Fatalf("marked request %d went to %q (err %v), want v2", i, b, err)
		}
	}
}
