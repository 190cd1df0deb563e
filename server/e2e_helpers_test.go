package server_test

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/xds"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/xdshard/xdshard/server"
)

// echoMethod is served by every test backend; it answers with a header
// naming the backend, so a client can count where its RPCs went.
const echoMethod = "/xdshard.test.Echo/Who"

// backend is a real gRPC server on 127.0.0.1 that counts its calls.
type backend struct {
	name string
	port int
	srv  *grpc.Server

	mu    sync.Mutex
	calls int
}

func startBackend(t *testing.T, name string) *backend {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{name: name, port: lis.Addr().(*net.TCPAddr).Port}
	b.srv = grpc.NewServer(grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
		b.mu.Lock()
		b.calls++
		b.mu.Unlock()
		if err := stream.RecvMsg(&emptypb.Empty{}); err != nil {
			return err
		}
		if err := stream.SetHeader(metadata.Pairs("backend", b.name)); err != nil {
			return err
		}
		return stream.SendMsg(&emptypb.Empty{})
	}))
	go func() { _ = b.srv.Serve(lis) }()
	t.Cleanup(b.srv.Stop)
	return b
}

func (b *backend) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.calls
}

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

// who makes one RPC and returns the backend that answered it.
func who(ctx context.Context, conn *grpc.ClientConn, md ...string) (string, error) {
	if len(md) > 0 {
		ctx = metadata.AppendToOutgoingContext(ctx, md...)
	}
	var hdr metadata.MD
	if err := conn.Invoke(ctx, echoMethod, &emptypb.Empty{}, &emptypb.Empty{}, grpc.Header(&hdr)); err != nil {
		return "", err
	}
	if v := hdr.Get("backend"); len(v) == 1 {
		return v[0], nil
	}
	return "", fmt.Errorf("answer without a backend header")
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
	<-r.Synced()
	conn, err := grpc.NewClient(r.XDSAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return r, conn
}
