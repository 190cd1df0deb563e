// Package echo is the gRPC backend and client call the end-to-end tests
// route through xDS: a real gRPC server that answers every method with a
// header naming itself, and Who, which makes one call and says who
// answered. Only tests import it.
package echo

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/emptypb"
)

// Method is the method Who calls; any method is answered.
const Method = "/xdshard.test.Echo/Who"

// Backend is a real gRPC server that counts its calls.
type Backend struct {
	Name string
	Addr *net.TCPAddr
	srv  *grpc.Server
	n    atomic.Int64
}

// Start serves a Backend named name on addr (HOST:PORT, port 0 for any)
// until the test ends.
func Start(tb testing.TB, name, addr string) *Backend {
	tb.Helper()
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	b := &Backend{Name: name, Addr: lis.Addr().(*net.TCPAddr)}
	b.srv = grpc.NewServer(grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
		b.n.Add(1)
		if err := stream.RecvMsg(&emptypb.Empty{}); err != nil {
			return err
		}
		if err := stream.SetHeader(metadata.Pairs("backend", b.Name)); err != nil {
			return err
		}
		return stream.SendMsg(&emptypb.Empty{})
	}))
	go func() { _ = b.srv.Serve(lis) }()
	tb.Cleanup(b.srv.Stop)
	return b
}

// Calls counts the calls answered.
func (b *Backend) Calls() int { return int(b.n.Load()) }

// Who makes one call on conn (with metadata md as key, value pairs) and
// returns the name of the backend that answered it.
func Who(ctx context.Context, conn *grpc.ClientConn, md ...string) (string, error) {
	if len(md) > 0 {
		ctx = metadata.AppendToOutgoingContext(ctx, md...)
	}
	var hdr metadata.MD
	if err := conn.Invoke(ctx, Method, &emptypb.Empty{}, &emptypb.Empty{}, grpc.Header(&hdr)); err != nil {
		return "", err
	}
	if v := hdr.Get("backend"); len(v) == 1 {
		return v[0], nil
	}
	return "", fmt.Errorf("answer without a backend header")
}

// Split makes n calls and returns the share answered by backend name. A
// failed call is returned as the error.
func Split(ctx context.Context, conn *grpc.ClientConn, n int, name string) (float64, error) {
	hits := 0
	for i := 0; i < n; i++ {
		b, err := Who(ctx, conn)
		if err != nil {
			return 0, fmt.Errorf("call %d of %d: %w", i+1, n, err)
		}
		if b == name {
			hits++
		}
	}
	return float64(hits) / float64(n), nil
}
