package builder

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/wrapperspb"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/xdshard/xdshard/snapshot"
	"github.com/xdshard/xdshard/snapshot/model"
)

// namesBuild is a small real BuildFunc: one resource per visible object, so
// a change to any object changes the tenant's version.
type namesBuild struct {
	mu    sync.Mutex
	calls map[string]int
	fail  map[string]error
}

func (n *namesBuild) build(v *model.TenantView) (*snapshot.Snapshot, error) {
	n.mu.Lock()
	n.calls[v.Tenant]++
	err := n.fail[v.Tenant]
	n.mu.Unlock()
	if err != nil {
		return nil, err
	}
	var items []*snapshot.Resource
	for _, objs := range v.Own {
		for _, o := range objs {
			r, err := snapshot.Encode(o.Ref(), wrapperspb.String(o.Meta.ResourceVersion))
			if err != nil {
				return nil, err
			}
			items = append(items, r)
		}
	}
	set, err := snapshot.NewSet(snapshot.ClusterType, items)
	if err != nil {
		return nil, err
	}
	return snapshot.New(v.Tenant, map[snapshot.View]map[string]*snapshot.Set{snapshot.ViewEnvoy: {snapshot.ClusterType: set}}, nil), nil
}

func (n *namesBuild) count(t string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.calls[t]
}

func pod(ns, name, rv string) model.Change {
	k := model.Key{Kind: model.KindPod, Namespace: ns, Name: name}
	meta := metav1.ObjectMeta{Namespace: ns, Name: name, ResourceVersion: rv}
	return model.Change{Key: k, Object: &model.Object{Key: k, Meta: meta, Body: &corev1.Pod{ObjectMeta: meta}}}
}

type published struct {
	tenant, version string
}

func start(t *testing.T, opts Options) (*Builder, *snapshot.Store, *namesBuild, chan published) {
	t.Helper()
	nb := &namesBuild{calls: map[string]int{}, fail: map[string]error{}}
	store := snapshot.NewStore(0)
	pubs := make(chan published, 100)
	opts.Build = nb.build
	opts.OnPublish = func(s *snapshot.Snapshot, _ time.Time) { pubs <- published{s.Tenant, s.Version} }
	b := New(model.NewMesh(), store, opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = b.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return b, store, nb, pubs
}

func waitPub(t *testing.T, pubs chan published) published {
	t.Helper()
	select {
	case p := <-pubs:
		return p
	case <-time.After(time.Minute):
		t.Fatal("no snapshot published within a minute (hang check)")
		return published{}
	}
}

func TestBurstToOneTenantIsOneBuildOfThatTenant(t *testing.T) {
	b, store, nb, pubs := start(t, Options{Debounce: 50 * time.Millisecond, MaxDelay: 5 * time.Second})
	b.Apply([]model.Change{pod("a", "p", "1"), pod("b", "p", "1")})
	got := map[string]bool{waitPub(t, pubs).tenant: true, waitPub(t, pubs).tenant: true}
	if !got["a"] || !got["b"] {
		t.Fatalf("initial builds published %v, want a and b", got)
	}
	for i := 2; i < 12; i++ {
		b.Apply([]model.Change{pod("a", "p", string(rune('0'+i)))})
	}
	p := waitPub(t, pubs)
	if p.tenant != "a" || p.version != store.Current("a").Version {
		t.Fatalf("published %+v, want tenant a at its current version", p)
	}
	waitIdle(t, b)
	if nb.count("a") != 2 || nb.count("b") != 1 {
		t.Fatalf("builds a=%d b=%d, want a=2 (initial + one for the burst) b=1", nb.count("a"), nb.count("b"))
	}
}

func TestMaxDelayBoundsAContinuousBurst(t *testing.T) {
	b, _, _, pubs := start(t, Options{Debounce: 200 * time.Millisecond, MaxDelay: 300 * time.Millisecond})
	stop := time.After(3 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-pubs:
			return // built although changes never paused for the quiet time
		case <-stop:
			t.Fatal("a burst with no quiet time was never built")
		case <-tick.C:
			b.Apply([]model.Change{pod("a", "p", time.Now().String())})
		}
	}
}

func TestFailedBuildKeepsLastGood(t *testing.T) {
	b, store, nb, pubs := start(t, Options{Debounce: 10 * time.Millisecond})
	b.Apply([]model.Change{pod("a", "p", "1")})
	good := waitPub(t, pubs)
	nb.mu.Lock()
	nb.fail["a"] = errors.New("boom")
	nb.mu.Unlock()
	b.Apply([]model.Change{pod("a", "p", "2")})
	waitIdleAfter(t, b, nb, "a", 2)
	if store.Current("a").Version != good.version {
		t.Fatal("a failed build replaced the last good snapshot")
	}
	if b.Failures()["a"] == nil {
		t.Fatal("failure not recorded for status")
	}
}

func TestPanickingBuildIsContained(t *testing.T) {
	nb := &namesBuild{calls: map[string]int{}, fail: map[string]error{}}
	store := snapshot.NewStore(0)
	mesh := model.NewMesh()
	mesh.Apply([]model.Change{pod("a", "p", "1"), pod("b", "p", "1")})
	b := New(mesh, store, Options{Build: func(v *model.TenantView) (*snapshot.Snapshot, error) {
		if v.Tenant == "a" {
			panic("bad input")
		}
		return nb.build(v)
	}})
	if err := b.BuildAll(); err == nil {
		t.Fatal("panic in a's build not reported")
	}
	if store.Current("b") == nil || store.Current("a") != nil {
		t.Fatal("b should be built and a not")
	}
}

func waitIdle(t *testing.T, b *Builder) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !b.Idle() {
		if time.Now().After(deadline) {
			t.Fatal("builder not idle within a minute (hang check)")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func waitIdleAfter(t *testing.T, b *Builder, nb *namesBuild, tenant string, calls int) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for nb.count(tenant) < calls || !b.Idle() {
		if time.Now().After(deadline) {
			t.Fatalf("tenant %s not built %d times within a minute (hang check)", tenant, calls)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestNoConcurrentBuildOfOneTenant: the first full build (BuildAll) and
// the scheduler's builds, triggered meanwhile by diagnostics and changes,
// never build one tenant twice at once. Before, BuildAll ran outside the
// scheduler and overlapped with it.
func TestNoConcurrentBuildOfOneTenant(t *testing.T) {
	var mu sync.Mutex
	running, overlaps, builds := map[string]int{}, 0, 0
	mesh, store := model.NewMesh(), snapshot.NewStore(0)
	b := New(mesh, store, Options{Debounce: time.Millisecond, MaxDelay: time.Millisecond, Workers: 4,
		Build: func(v *model.TenantView) (*snapshot.Snapshot, error) {
			mu.Lock()
			running[v.Tenant]++
			if running[v.Tenant] > 1 {
				overlaps++
			}
			builds++
			mu.Unlock()
			time.Sleep(20 * time.Millisecond) // long enough for the other path to start
			mu.Lock()
			running[v.Tenant]--
			mu.Unlock()
			return snapshot.New(v.Tenant, nil, nil), nil
		}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = b.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	mesh.Apply([]model.Change{pod("a", "p", "1"), pod("b", "p", "1")})
	built := make(chan error)
	go func() { built <- b.BuildAll() }()
	for i := 0; i < 5; i++ { // what a source reports while the first build runs
		b.SetDiagnostics("f.yaml", []snapshot.Diagnostic{{Severity: snapshot.SeverityError, Namespace: "a", Message: fmt.Sprint(i)}})
		b.Apply([]model.Change{pod("b", "p", fmt.Sprint(i+2))})
		time.Sleep(5 * time.Millisecond)
	}
	if err := <-built; err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for !b.Idle() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if overlaps != 0 {
		t.Fatalf("%d builds overlapped with another build of the same tenant (of %d builds)", overlaps, builds)
	}
	if builds < 3 {
		t.Fatalf("only %d builds: the changes made during the first build were not built", builds)
	}
}

// TestQuietTenantIsBuiltAtOnce: the leading edge. A tenant quiet for a
// whole debounce window is built as soon as it changes (here the window is
// an hour, so waiting it out would hang the test); a change right after is
// coalesced: it waits, pending, not marked to be built at once.
func TestQuietTenantIsBuiltAtOnce(t *testing.T) {
	b, _, nb, pubs := start(t, Options{Debounce: time.Hour, MaxDelay: 2 * time.Hour})
	b.Apply([]model.Change{pod("a", "p", "1")})
	if p := waitPub(t, pubs); p.tenant != "a" {
		t.Fatalf("published %s", p.tenant)
	}
	waitIdle(t, b)
	b.Apply([]model.Change{pod("a", "p", "2")})
	b.mu.Lock()
	p := b.pending["a"]
	b.mu.Unlock()
	if p == nil || p.now {
		t.Fatalf("a change within the window is pending %+v; want it coalesced (pending, not at once)", p)
	}
	if n := nb.count("a"); n != 1 {
		t.Fatalf("%d builds, want 1", n)
	}
}

// TestBurstAfterQuietCostsAtMostThreeBuilds: 100 edits to one tenant
// within about a second cost the leading-edge build, the maximum-delay
// build and the trailing one at most. (The window is a second, so a
// loaded machine's pauses between edits do not end the burst.)
func TestBurstAfterQuietCostsAtMostThreeBuilds(t *testing.T) {
	b, _, nb, _ := start(t, Options{Debounce: time.Second, MaxDelay: 2 * time.Second})
	for i := 0; i < 100; i++ {
		b.Apply([]model.Change{pod("a", "p", fmt.Sprint(i))})
		time.Sleep(10 * time.Millisecond)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !b.Idle() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := nb.count("a"); n < 1 || n > 3 {
		t.Fatalf("a burst of 100 edits cost %d builds, want 1 to 3", n)
	}
}
