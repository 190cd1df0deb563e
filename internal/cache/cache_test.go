package cache

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func bytesOf(v string) int64 { return int64(len(v)) }

// TestBoundStaleAndMetrics fills an LRU past its bound and checks the
// least recently used goes first, a stale entry goes on the next Put, the
// one just put stays whatever its size, OnEvict hears of each, and the
// metrics say so by the cache's name.
func TestBoundStaleAndMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg, "test")
	stale := map[string]bool{}
	var evicted []string
	l := New(Options[string, string]{MaxBytes: 3 * (EntryCost + 10), Size: bytesOf, Metrics: m,
		Stale: func(k string) bool { return stale[k] }, OnEvict: func(k, _ string) { evicted = append(evicted, k) }})
	ten := strings.Repeat("x", 10)
	for _, k := range []string{"a", "b", "c"} {
		l.Put(k, ten)
	}
	if _, ok := l.Get("a"); !ok { // a is now the most recent: b goes first
		t.Fatal("a is not kept")
	}
	l.Put("d", ten)
	if l.Has("b") || !l.Has("a") || !l.Has("c") || !l.Has("d") {
		t.Fatalf("after the bound: a %v b %v c %v d %v; want b gone", l.Has("a"), l.Has("b"), l.Has("c"), l.Has("d"))
	}
	stale["c"] = true
	l.Remove("a")
	l.Put("e", "") // under the bound: only the stale c goes
	if l.Has("c") || !l.Has("d") || !l.Has("e") {
		t.Fatalf("the stale entry stayed, or a fresh one went")
	}
	l.Put("huge", strings.Repeat("x", 10000))
	if !l.Has("huge") || l.Len() != 1 {
		t.Fatalf("%d entries after a put bigger than the bound; want that one alone", l.Len())
	}
	if _, ok := l.Get("nothing"); ok {
		t.Fatal("a miss answered")
	}
	if got := strings.Join(evicted, ","); got != "b,c,d,e" {
		t.Fatalf("OnEvict heard %s, want b,c,d,e (a was removed, not evicted)", got)
	}
	for _, c := range []struct {
		name string
		got  prometheus.Collector
		want float64
	}{
		{"hits", m.hits, 1}, {"misses", m.misses, 1}, {"bound", m.evicted, 3}, {"stale", m.stale, 1},
		{"entries", m.entries, 1}, {"bytes", m.bytes, 10000 + EntryCost},
	} {
		if v := testutil.ToFloat64(c.got); v != c.want {
			t.Errorf("%s = %v, want %v", c.name, v, c.want)
		}
	}
	if n, err := testutil.GatherAndCount(reg, "xdshard_cache_hits_total", "xdshard_cache_evictions_total", "xdshard_cache_bytes"); err != nil || n != 4 {
		t.Fatalf("registered series %d (%v), want 4", n, err)
	}
	NewMetrics(reg, "another") // a second cache on the same registry

	strict := New(Options[string, string]{MaxBytes: EntryCost, Size: bytesOf, Strict: true})
	strict.Put("over", "x")
	if strict.Has("over") || strict.Bytes() != 0 {
		t.Fatal("a strict cache kept an entry that alone passes its bound")
	}
}
