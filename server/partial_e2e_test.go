package server_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/xdshard/xdshard/internal/echo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// twoServices is tenant shop with two services, echo and echo2, each one
// endpoint on 127.0.0.1 at the given ports.
func twoServices(p1, p2 int) []byte {
	out := "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n"
	for name, port := range map[string]int{"echo": p1, "echo2": p2} {
		out += fmt.Sprintf(`---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: %[1]s, namespace: shop}
spec:
  hosts: [%[1]s.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 7070, name: grpc, protocol: GRPC}]
  endpoints: [{address: 127.0.0.1, ports: {grpc: %[2]d}}]
`, name, port)
	}
	return []byte(out)
}

// TestGRPCXDSClientTakesPartialEndpoints: grpc-go's own xDS client, one
// ADS stream for two services, is sent only the changed service's
// endpoints when one moves (a partial state-of-the-world EDS response), and
// keeps routing the other: grpc-go, like Envoy, keeps the
// ClusterLoadAssignments a response leaves out.
func TestGRPCXDSClientTakesPartialEndpoints(t *testing.T) {
	a, b, c := echo.Start(t, "a", "127.0.0.1:0"), echo.Start(t, "b", "127.0.0.1:0"), echo.Start(t, "c", "127.0.0.1:0")
	dir := t.TempDir()
	file := filepath.Join(dir, "mesh.yaml")
	write := func(p1, p2 int) {
		t.Helper()
		if err := os.WriteFile(file+".tmp~", twoServices(p1, p2), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(file+".tmp~", file); err != nil {
			t.Fatal(err)
		}
	}
	write(a.Addr.Port, b.Addr.Port)
	r := startReplica(t, dir)

	rb := xdsResolver(t, r.XDSAddr(), "shop", "client-shop") // one xDS client, so one ADS stream for both
	dial := func(target string) *grpc.ClientConn {
		conn, err := grpc.NewClient("xds:///"+target, grpc.WithResolvers(rb), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		return conn
	}
	first, second := dial("echo.shop.svc.cluster.local:7070"), dial("echo2.shop.svc.cluster.local:7070")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	expect := func(conn *grpc.ClientConn, want string) {
		t.Helper()
		if got, err := echo.Who(ctx, conn); err != nil || got != want {
			t.Fatalf("RPC answered by %q (err %v), want %q", got, err, want)
		}
	}
	expect(first, "a")
	expect(second, "b")
	before := metric(t, r, "xdshard_xds_partial_pushes_total", map[string]string{"type": "eds"})

	write(a.Addr.Port, c.Addr.Port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		expect(first, "a") // never interrupted
		got, err := echo.Who(ctx, second)
		if err != nil {
			t.Fatalf("echo2 failed during the move: %v", err)
		}
		if got == "c" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("echo2 never moved to its new endpoint")
		}
	}
	for range 20 {
		expect(first, "a")
		expect(second, "c")
	}
	if after := metric(t, r, "xdshard_xds_partial_pushes_total", map[string]string{"type": "eds"}); after <= before {
		t.Fatalf("no partial EDS response was sent (xdshard_xds_partial_pushes_total{type=eds} %v -> %v)", before, after)
	}
}
