package sharding

import (
	"fmt"
	"testing"
)

func tenants(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("tenant-%04d", i)
	}
	return out
}

func members(ids ...string) []Member {
	var out []Member
	for _, id := range ids {
		out = append(out, Member{ID: id, Addr: "127.0.0.1:1"})
	}
	return out
}

// TestRingBalances: owners are spread about evenly.
func TestRingBalances(t *testing.T) {
	r := NewRing(members("a", "b", "c"))
	count := map[string]int{}
	for _, tn := range tenants(3000) {
		o, _ := r.Owner(tn)
		count[o.ID]++
	}
	for id, n := range count {
		if n < 800 || n > 1200 {
			t.Errorf("member %s owns %d of 3000 tenants, want about 1000", id, n)
		}
	}
}

// TestRingMovesOnlyWhatMustMove: a member leaving moves only its tenants;
// one joining takes about 1/N and moves nothing between the others.
func TestRingMovesOnlyWhatMustMove(t *testing.T) {
	three, two, four := NewRing(members("a", "b", "c")), NewRing(members("a", "c")), NewRing(members("a", "b", "c", "d"))
	moved := 0
	for _, tn := range tenants(4000) {
		o3, _ := three.Owner(tn)
		o2, _ := two.Owner(tn)
		if o3.ID != "b" && o2.ID != o3.ID {
			t.Fatalf("%s moved from %s to %s though %s stayed", tn, o3.ID, o2.ID, o3.ID)
		}
		o4, _ := four.Owner(tn)
		if o4.ID != o3.ID {
			if o4.ID != "d" {
				t.Fatalf("%s moved from %s to %s when d joined", tn, o3.ID, o4.ID)
			}
			moved++
		}
	}
	if moved < 800 || moved > 1200 {
		t.Fatalf("d took %d of 4000 tenants, want about 1000", moved)
	}
}

func TestRingIsTheSameOnEveryReplica(t *testing.T) {
	a, b := NewRing(members("x", "y", "z")), NewRing(members("z", "x", "y"))
	for _, tn := range tenants(100) {
		oa, _ := a.Owner(tn)
		ob, _ := b.Owner(tn)
		if oa != ob {
			t.Fatalf("%s: %v and %v", tn, oa, ob)
		}
	}
	if _, ok := NewRing(nil).Owner("t"); ok {
		t.Fatal("an empty ring named an owner")
	}
}

func TestParsePeers(t *testing.T) {
	ms, err := ParsePeers("a=127.0.0.1:1, b=127.0.0.1:2")
	if err != nil || len(ms) != 2 || ms[1] != (Member{"b", "127.0.0.1:2"}) {
		t.Fatalf("%v %v", ms, err)
	}
	for _, bad := range []string{"", "a", "=127.0.0.1:1", "a=nope", "a=127.0.0.1:1,a=127.0.0.1:2"} {
		if _, err := ParsePeers(bad); err == nil {
			t.Errorf("ParsePeers(%q) accepted it", bad)
		}
	}
}
