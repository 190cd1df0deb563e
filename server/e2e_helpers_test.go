package server_test

import (
	"fmt"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/xds"

	"github.com/xdshard/xdshard/server"
)

// xdsResolver returns grpc-go's own xDS resolver with an inline bootstrap:
// a node of namespace ns with GENERATOR grpc, as Istio's proxyless
// bootstrap makes it, talking plaintext to xdsAddr.
func xdsResolver(t *testing.T, xdsAddr, ns, pod string) resolver.Builder {
	t.Helper()
	bootstrap := fmt.Sprintf(`{
  "xds_servers": [{"server_uri": %q, "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}],
  "node": {
    "id": "sidecar~127.0.0.1~%s.%s~%s.svc.cluster.local",
    "metadata": {"GENERATOR": "grpc", "NAMESPACE": %q, "ISTIO_VERSION": "1.30.0"}
  }
}`, xdsAddr, pod, ns, ns, ns)
	b, err := xds.NewXDSResolverWithConfigForTesting([]byte(bootstrap))
	if err != nil {
		t.Fatalf("xds resolver: %v", err)
	}
	return b
}

// dialXDS dials xds:///target through grpc-go's xDS client as a proxyless
// client of namespace ns.
func dialXDS(t *testing.T, xdsAddr, ns, target string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("xds:///"+target,
		grpc.WithResolvers(xdsResolver(t, xdsAddr, ns, "client-"+ns)),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial %s: %v", target, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// startPlain starts a replica of cfg (its xDS address on loopback unless
// set) until the test ends, waits for its first build, and dials its xDS
// port in plaintext, as the simulated proxies do.
func startPlain(t *testing.T, cfg server.Config) (*server.Replica, *grpc.ClientConn) {
	t.Helper()
	if cfg.XDSAddr == "" {
		cfg.XDSAddr = "127.0.0.1:0"
	}
	r, err := server.Start(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	synced(t, r.Synced())
	conn, err := grpc.NewClient(r.XDSAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return r, conn
}
