package snapshot

import (
	"testing"

	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func testSnap(t *testing.T, tenant, value string) *Snapshot {
	t.Helper()
	r, err := Encode("a", wrapperspb.String(value))
	if err != nil {
		t.Fatal(err)
	}
	return New(tenant, map[View]map[string]*Set{ViewEnvoy: {ClusterType: MustSet(ClusterType, []*Resource{r})}}, nil)
}

func TestPublishSameVersionIsNoChange(t *testing.T) {
	s := NewStore(3)
	w := s.Watch("t1")
	defer w.Close()
	if !s.Publish(testSnap(t, "t1", "x")) {
		t.Fatal("first publish reported no change")
	}
	<-w.C()
	if s.Publish(testSnap(t, "t1", "x")) {
		t.Fatal("identical rebuild reported a change")
	}
	select {
	case <-w.C():
		t.Fatal("identical rebuild woke a watcher")
	default:
	}
}

func TestHistoryKeepsLastK(t *testing.T) {
	s := NewStore(2)
	for _, v := range []string{"a", "b", "c", "b"} {
		s.Publish(testSnap(t, "t", v))
	}
	h := s.History("t")
	if len(h) != 2 {
		t.Fatalf("history has %d versions, want 2", len(h))
	}
	if h[1] != s.Current("t") {
		t.Fatal("last history entry is not current")
	}
	if h[0].Version != testSnap(t, "t", "c").Version || h[1].Version != testSnap(t, "t", "b").Version {
		t.Fatal("history is not [c, b]")
	}
}

func TestWatchIsPerTenantAndAll(t *testing.T) {
	s := NewStore(0)
	w1, wAll := s.Watch("t1"), s.Watch("")
	defer w1.Close()
	defer wAll.Close()
	s.Publish(testSnap(t, "t2", "x"))
	select {
	case <-w1.C():
		t.Fatal("t1 watcher woken by t2")
	default:
	}
	select {
	case <-wAll.C():
	default:
		t.Fatal("all-tenant watcher not woken")
	}
}

func TestVersionIsContentHash(t *testing.T) {
	a, b := testSnap(t, "t", "x"), testSnap(t, "other", "x")
	if a.Version != b.Version {
		t.Fatal("same content, different versions")
	}
	if testSnap(t, "t", "y").Version == a.Version {
		t.Fatal("different content, same version")
	}
}

func TestMCPKey(t *testing.T) {
	for in, want := range map[string]string{
		"networking.istio.io/v1/VirtualService":       "networking.istio.io/VirtualService",
		"networking.istio.io/v1alpha3/VirtualService": "networking.istio.io/VirtualService",
		ClusterType: ClusterType,
	} {
		if got := MCPKey(in); got != want {
			t.Errorf("MCPKey(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestAnyIsDeterministic: a message with a map encodes to the same bytes
// every time, so its version never changes by itself.
func TestAnyIsDeterministic(t *testing.T) {
	m, _ := structpb.NewStruct(map[string]any{"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6, "g": 7, "h": 8})
	first, err := Any(m)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		again, _ := Any(m)
		if string(again.Value) != string(first.Value) {
			t.Fatal("Any encoded the same message differently")
		}
	}
}
