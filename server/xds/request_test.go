package xds

import (
	"slices"
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// FuzzSotWRequestDecode checks the state-of-the-world request decoder
// against protobuf's own on any bytes: the same request, or an error from
// both. Each input is decoded twice, the names of the first remembered as
// applied, so the second takes the path that reuses them; and once more
// in two buffers, as gRPC hands over a message split across frames.
func FuzzSotWRequestDecode(f *testing.F) {
	for _, r := range []*discovery.DiscoveryRequest{
		{TypeUrl: "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment", ResourceNames: []string{"a", "b", "c"}, VersionInfo: "v1", ResponseNonce: "7"},
		{TypeUrl: "t", ResourceNames: []string{"", "*", "a\x00b"}},
		{TypeUrl: "t", Node: &core.Node{Id: "sidecar~1~p.ns~ns.svc.cluster.local"}, ResourceNames: []string{"x"}},
		{TypeUrl: "t", ErrorDetail: &status.Status{Code: 3, Message: "bad"}, ResponseNonce: "1"},
		{},
	} {
		b, err := proto.Marshal(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0x1a, 0x02, 0xff, 0xfe}) // a name that is not UTF-8
	f.Add([]byte{0x22, 0x05, 't'})        // truncated
	slow := encoding.GetCodecV2(grpcproto.Name)
	f.Fuzz(func(t *testing.T, b []byte) {
		want := &discovery.DiscoveryRequest{}
		wantErr := proto.Unmarshal(b, want)
		r := &sotwRequests{}
		check := func(how string, data mem.BufferSlice) {
			t.Helper()
			err := r.unmarshal(data, slow)
			if (err != nil) != (wantErr != nil) {
				t.Fatalf("%s: error %v, protobuf's %v", how, err, wantErr)
			}
			if err == nil && !proto.Equal(r.req, want) {
				t.Fatalf("%s: decoded %v, protobuf decoded %v", how, r.req, want)
			}
		}
		check("first", mem.BufferSlice{mem.SliceBuffer(b)})
		if wantErr == nil && r.decoded(r.req) {
			r.remember(r.req.TypeUrl, r.req.ResourceNames)
		}
		check("again, names remembered", mem.BufferSlice{mem.SliceBuffer(b)})
		half := len(b) / 2
		check("in two buffers", mem.BufferSlice{mem.SliceBuffer(b[:half]), mem.SliceBuffer(b[half:])})
	})
}

// TestSotWRequestReusesNames checks the point of the decoder: an ACK that
// repeats the names last applied takes that slice, without decoding a
// name; one that changes them decodes them.
func TestSotWRequestReusesNames(t *testing.T) {
	slow := encoding.GetCodecV2(grpcproto.Name)
	enc := func(names ...string) mem.BufferSlice {
		b, err := proto.Marshal(&discovery.DiscoveryRequest{TypeUrl: "eds", ResourceNames: names, ResponseNonce: "n", VersionInfo: "v"})
		if err != nil {
			t.Fatal(err)
		}
		return mem.BufferSlice{mem.SliceBuffer(b)}
	}
	r := &sotwRequests{}
	if err := r.unmarshal(enc("a", "b"), slow); err != nil || r.reused {
		t.Fatalf("first: err %v, reused %v", err, r.reused)
	}
	applied := []string{"a", "b"}
	r.remember("eds", applied)
	if err := r.unmarshal(enc("a", "b"), slow); err != nil || !r.reused || &r.req.ResourceNames[0] != &applied[0] {
		t.Fatalf("the same names: err %v, reused %v", err, r.reused)
	}
	if err := r.unmarshal(enc("a", "c"), slow); err != nil || r.reused || r.req.ResourceNames[1] != "c" {
		t.Fatalf("other names: err %v, reused %v, names %v", err, r.reused, r.req.ResourceNames)
	}
	ack := enc("a", "b")
	r.forget("eds")
	allocs := testing.AllocsPerRun(100, func() { _ = r.unmarshal(ack, slow) })
	r.remember("eds", applied)
	reusing := testing.AllocsPerRun(100, func() { _ = r.unmarshal(ack, slow) })
	t.Logf("allocations per ACK: %v decoding its names, %v reusing them", allocs, reusing)
	if reusing >= allocs {
		t.Fatalf("reusing the names allocates %v times per request, decoding them %v", reusing, allocs)
	}
}

// TestNamesHashIgnoresWhereTheNamesStand: the names' hash is the same
// whether their fields stand back to back (hashed in one call) or
// between other fields (hashed one by one), so an ACK's names are known
// for the subscription's however the client's encoder placed them.
func TestNamesHashIgnoresWhereTheNamesStand(t *testing.T) {
	field := func(num protowire.Number, v string) []byte {
		return protowire.AppendString(protowire.AppendTag(nil, num, protowire.BytesType), v)
	}
	together := slices.Concat(field(reqTypeURL, "t"), field(reqResourceNames, "a"), field(reqResourceNames, "b"), field(reqResourceNames, "c"), field(reqResponseNonce, "1"))
	apart := slices.Concat(field(reqResourceNames, "a"), field(reqTypeURL, "t"), field(reqResourceNames, "b"), field(reqResponseNonce, "1"), field(reqResourceNames, "c"))
	other := slices.Concat(field(reqTypeURL, "t"), field(reqResourceNames, "a"), field(reqResourceNames, "bc"), field(reqResponseNonce, "1"))
	hash := func(b []byte) uint64 {
		r := &sotwRequests{req: &discovery.DiscoveryRequest{}}
		if !r.fast(b) || r.count < 2 {
			t.Fatalf("%x not decoded by the fast path", b)
		}
		return r.hash
	}
	if hash(together) != hash(apart) {
		t.Fatal("the same names hash differently apart and together")
	}
	if hash(together) == hash(other) {
		t.Fatal("other names hash the same")
	}
}
