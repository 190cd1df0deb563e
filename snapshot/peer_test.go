package snapshot

import (
	"testing"

	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestPeerRoundTrip: a snapshot sent as peer resources is rebuilt with the
// owner's version and bytes; a partial set is refused.
func TestPeerRoundTrip(t *testing.T) {
	enc := func(name, v string) *Resource {
		r, err := Encode(name, wrapperspb.String(v))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	views := map[View]map[string]*Set{
		ViewEnvoy:         {ClusterType: MustSet(ClusterType, []*Resource{enc("outbound|80||a", "1"), enc("outbound|80||b", "2")})},
		ViewMCPByRevision: {"networking.istio.io/VirtualService@1-31": MustSet("networking.istio.io/VirtualService", []*Resource{enc("ns/vs", "3")})},
	}
	owner := New("acme", views, []Diagnostic{{Severity: SeverityWarning, Message: "w"}}).WithNamespaces([]string{"a", "b"})
	set, err := owner.PeerSet()
	if err != nil {
		t.Fatal(err)
	}
	items := map[string]*Resource{}
	for _, r := range set.Items {
		items[r.Name] = r
	}
	got, err := FromPeer("acme", items, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != owner.Version || got.Set(ViewEnvoy, ClusterType).Version != owner.Set(ViewEnvoy, ClusterType).Version || len(got.Diagnostics) != 1 || !got.Serves("b") {
		t.Fatalf("rebuilt %+v, want the owner's %+v", got, owner)
	}
	if got.Set(ViewEnvoy, ClusterType).Items[0].Body != owner.Set(ViewEnvoy, ClusterType).Items[0].Body {
		t.Fatal("the rebuilt snapshot does not hold the owner's encoded bytes")
	}
	for name := range items {
		if name != peerMetaName {
			delete(items, name)
			break
		}
	}
	if _, err := FromPeer("acme", items, nil); err == nil {
		t.Fatal("a snapshot missing a resource was rebuilt")
	}
}

// TestPeerReusesUnchangedSets: given the copy held, a new version of the
// owner's snapshot reuses the sets whose versions did not change (the
// same *Set, so responses cached for it still hit) and rebuilds the
// others, with the version it has without the copy.
func TestPeerReusesUnchangedSets(t *testing.T) {
	enc := func(name, v string) *Resource {
		r, err := Encode(name, wrapperspb.String(v))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	snapOf := func(endpoint string) *Snapshot {
		return New("acme", map[View]map[string]*Set{ViewEnvoy: {
			ClusterType:  MustSet(ClusterType, []*Resource{enc("c1", "1")}),
			EndpointType: MustSet(EndpointType, []*Resource{enc("c1", endpoint)}),
		}}, nil)
	}
	items := func(s *Snapshot) map[string]*Resource {
		set, err := s.PeerSet()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]*Resource{}
		for _, r := range set.Items {
			out[r.Name] = r
		}
		return out
	}
	v1, v2 := snapOf("10.0.0.1"), snapOf("10.0.0.2")
	held, err := FromPeer("acme", items(v1), nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := FromPeer("acme", items(v2), held)
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := FromPeer("acme", items(v2), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != v2.Version || fresh.Version != v2.Version {
		t.Fatalf("versions %s (with the held copy), %s (without), want the owner's %s", got.Version, fresh.Version, v2.Version)
	}
	if got.Set(ViewEnvoy, ClusterType) != held.Set(ViewEnvoy, ClusterType) {
		t.Fatal("the unchanged cluster set was rebuilt, not reused")
	}
	if got.Set(ViewEnvoy, EndpointType) == held.Set(ViewEnvoy, EndpointType) {
		t.Fatal("the changed endpoint set was reused")
	}
}
