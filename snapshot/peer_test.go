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
	got, err := FromPeer("acme", items)
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
	if _, err := FromPeer("acme", items); err == nil {
		t.Fatal("a snapshot missing a resource was rebuilt")
	}
}
