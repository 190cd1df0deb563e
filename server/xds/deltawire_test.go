package xds

import (
	"math/rand/v2"
	"testing"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

// TestDeltaWireDecodesAsProtobuf: a delta response laid out by deltaWire
// (resources referenced, not copied) decodes to the response it was made
// from, for random responses: resources with and without names, versions
// and bodies (an empty body too), removals, empty fields, long values
// (multi-byte lengths). And it references each resource's bytes rather
// than copying them.
func TestDeltaWireDecodesAsProtobuf(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	str := func(max int) string {
		n := rng.IntN(max + 1)
		b := make([]byte, n)
		for i := range b {
			b[i] = byte('a' + rng.IntN(26))
		}
		return string(b)
	}
	for round := range 500 {
		r := &discovery.DeltaDiscoveryResponse{SystemVersionInfo: str(20), TypeUrl: str(70), Nonce: str(10)}
		for range rng.IntN(6) {
			x := &discovery.Resource{Name: str(40), Version: str(16)}
			if rng.IntN(5) > 0 {
				v := make([]byte, []int{0, 3, 200, 20000}[rng.IntN(4)])
				for i := range v {
					v[i] = byte(rng.IntN(256))
				}
				x.Resource = &anypb.Any{TypeUrl: str(70), Value: v}
			}
			r.Resources = append(r.Resources, x)
		}
		for range rng.IntN(4) {
			r.RemovedResources = append(r.RemovedResources, str(30))
		}
		w := deltaWire(r)
		if w == nil {
			t.Fatalf("round %d: deltaWire refused a plain response", round)
		}
		wire := w.bufs.Materialize()
		var got discovery.DeltaDiscoveryResponse
		if err := proto.Unmarshal(wire, &got); err != nil {
			t.Fatalf("round %d: the wire bytes do not decode: %v", round, err)
		}
		if !proto.Equal(&got, r) {
			t.Fatalf("round %d: decoded\n%v\nwant\n%v", round, &got, r)
		}
		if want, _ := proto.Marshal(r); len(wire) != len(want) {
			t.Fatalf("round %d: %d bytes on the wire, protobuf writes %d", round, len(wire), len(want))
		}
		// Each value is one of the buffers, not a copy.
		for i, x := range r.Resources {
			v := x.GetResource().GetValue()
			if len(v) == 0 {
				continue
			}
			shared := false
			for _, b := range w.bufs {
				if bb := b.ReadOnlyData(); len(bb) == len(v) && &bb[0] == &v[0] {
					shared = true
				}
			}
			if !shared {
				t.Fatalf("round %d: resource %d's bytes were copied", round, i)
			}
		}
	}
}

// TestDeltaWireLeavesOtherFieldsToProtobuf: a response with a field
// deltaWire does not lay out is sent by protobuf (nil from deltaWire).
func TestDeltaWireLeavesOtherFieldsToProtobuf(t *testing.T) {
	for i, r := range []*discovery.DeltaDiscoveryResponse{
		{Resources: []*discovery.Resource{{Name: "a", Aliases: []string{"b"}}}},
		{Resources: []*discovery.Resource{{Name: "a", Ttl: durationpb.New(1)}}},
		{RemovedResourceNames: []*discovery.ResourceName{{Name: "a"}}},
	} {
		if deltaWire(r) != nil {
			t.Errorf("case %d: laid out %v, whose fields it does not know", i, r)
		}
	}
}
