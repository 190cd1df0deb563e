package xds

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// FuzzRequestSequence drives a real server with a random sequence of
// requests on one stream of tenant a (SotW or delta): any type URL
// (Envoy's, MCP-like, made up, empty), names of a's resources, b's, made
// up or huge, current, stale and random nonces and versions, NACKs, and
// node changes mid-stream. Whatever the sequence, the server never
// panics, and no response holds a byte of tenant b's resources.
func FuzzRequestSequence(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9})
	f.Add([]byte{1, 0x10, 0x21, 0x32, 0x43, 0x54, 0x65, 0x76, 0x87, 0x98, 0xa9})
	f.Add([]byte{0, 0xff, 0xfe, 0x7f, 0x80, 0x01, 0x33, 0x66, 0x99, 0xcc})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 2 || len(data) > 256 {
			return
		}
		e := newEnv(t)
		e.mesh("a", 3, 0)
		e.mesh("b", 3, 0)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		types := []string{cds, eds, lds, rds, "", "type.googleapis.com/made.up.T", "networking.istio.io/v1/VirtualService", "istio.io/debug/syncz"}
		names := [][]string{nil, {"a-c1"}, {"b-c1"}, {"a-c2", "b-c2"}, {"*"}, {"80"}, {string(bytes.Repeat([]byte("x"), 2000))}, {"a-c1", "a-c1", ""}}
		var got []proto.Message
		delta := data[0]%2 == 1
		data = data[1:]
		client := discovery.NewAggregatedDiscoveryServiceClient(e.conn)
		var mu sync.Mutex // the receive goroutine writes nonce and version, the sender reads them
		nonce, version := "", ""
		latest := func() (string, string) { mu.Lock(); defer mu.Unlock(); return nonce, version }
		var recv func() (proto.Message, error)
		var send func(i int, b byte) error
		if delta {
			s, err := client.DeltaAggregatedResources(ctx)
			if err != nil {
				return
			}
			recv = func() (proto.Message, error) {
				r, err := s.Recv()
				if err == nil {
					mu.Lock()
					nonce = r.Nonce
					mu.Unlock()
				}
				return r, err
			}
			send = func(i int, b byte) error {
				req := &discovery.DeltaDiscoveryRequest{TypeUrl: types[int(b)%len(types)]}
				if i == 0 || b&0x40 != 0 {
					req.Node = node("a", nil)
					if b&0x80 != 0 && i > 0 {
						req.Node = node("b", nil)
					}
				}
				n := names[int(b>>3)%len(names)]
				if b&0x20 != 0 {
					req.ResourceNamesUnsubscribe = n
				} else {
					req.ResourceNamesSubscribe = n
				}
				if b&0x10 != 0 {
					req.ResponseNonce, _ = latest()
				} else if b&0x08 != 0 {
					req.ResponseNonce = fmt.Sprint(b)
				}
				if b&0x04 != 0 {
					req.ErrorDetail = &status.Status{Code: 3, Message: "fuzz"}
				}
				if i == 0 && b&0x02 != 0 {
					req.InitialResourceVersions = map[string]string{"a-c1": "v", "b-c1": "w"}
				}
				return s.Send(req)
			}
		} else {
			s, err := client.StreamAggregatedResources(ctx)
			if err != nil {
				return
			}
			recv = func() (proto.Message, error) {
				r, err := s.Recv()
				if err == nil {
					mu.Lock()
					nonce, version = r.Nonce, r.VersionInfo
					mu.Unlock()
				}
				return r, err
			}
			send = func(i int, b byte) error {
				req := &discovery.DiscoveryRequest{TypeUrl: types[int(b)%len(types)], ResourceNames: names[int(b>>3)%len(names)]}
				if i == 0 || b&0x40 != 0 {
					req.Node = node("a", nil)
					if b&0x80 != 0 && i > 0 {
						req.Node = node("b", nil)
					}
				}
				if b&0x10 != 0 {
					req.ResponseNonce, req.VersionInfo = latest()
				} else if b&0x08 != 0 {
					req.ResponseNonce, req.VersionInfo = fmt.Sprint(b), "stale"
				}
				if b&0x04 != 0 {
					req.ErrorDetail = &status.Status{Code: 3, Message: "fuzz"}
				}
				return s.Send(req)
			}
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				m, err := recv()
				if err != nil {
					return
				}
				got = append(got, m)
			}
		}()
		for i, b := range data {
			if send(i, b) != nil {
				break
			}
			if b&0x01 != 0 {
				time.Sleep(time.Millisecond) // let a response come between requests
			}
		}
		time.Sleep(20 * time.Millisecond)
		cancel()
		<-done
		// A name the client asked for may come back (a delta removal, an
		// empty assignment): that is its own request, not b's data. Every
		// resource body is checked.
		var bodies []*anypb.Any
		for _, m := range got {
			switch r := m.(type) {
			case *discovery.DiscoveryResponse:
				bodies = append(bodies, r.Resources...)
			case *discovery.DeltaDiscoveryResponse:
				for _, x := range r.Resources {
					if bytes.HasPrefix([]byte(x.Name), []byte("b-")) {
						t.Fatalf("a stream of tenant a received tenant b's resource %q", x.Name)
					}
					bodies = append(bodies, x.Resource)
				}
			}
		}
		for _, a := range bodies {
			if !bytes.Contains(a.GetValue(), []byte("b-c")) {
				continue
			}
			var cla endpoint.ClusterLoadAssignment
			if a.GetTypeUrl() == eds && a.UnmarshalTo(&cla) == nil && len(cla.Endpoints) == 0 {
				continue
			}
			t.Fatalf("a stream of tenant a received bytes of tenant b's resources: %s %q", a.GetTypeUrl(), a.GetValue())
		}
	})
}
