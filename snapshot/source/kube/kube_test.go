package kube

import (
	"context"
	"fmt"
	"os"
	"runtime/pprof"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/discovery"

	"github.com/xdshard/xdshard/internal/kubetest"
	"github.com/xdshard/xdshard/snapshot/model"
)

// These tests run against a real kube-apiserver and etcd on loopback
// (internal/kubetest), one for the package, each test in namespaces of its
// own.

var cluster *kubetest.Cluster

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if bin := os.Getenv("XDSHARD_KUBE_BIN"); bin != "" {
		dir, err := os.MkdirTemp("", "kubetest")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		c, err := kubetest.Start(context.Background(), bin, dir)
		if err != nil {
			os.RemoveAll(dir)
			fmt.Fprintln(os.Stderr, "starting the API server:", err)
			return 1
		}
		cluster = c
		defer os.RemoveAll(dir)
	}
	code := m.Run()
	if cluster != nil {
		cluster.Stop() // before the leak check: its process's pipes and idle connections go with it
	}
	if code == 0 {
		// Every Source's Run waits for what it started; klog's flush
		// daemon is the process's (client-go logs through klog).
		if err := goleak.Find(goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1")); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			return 1
		}
	}
	return code
}

func need(t *testing.T) *kubetest.Cluster {
	t.Helper()
	kubetest.Binaries(t)
	if cluster == nil {
		t.Fatal("the API server did not start")
	}
	return cluster
}

var seq atomic.Int64

// ns is a namespace name no other test uses (a deleted namespace stays
// Terminating forever here: nothing finalizes it).
func ns(prefix string) string { return fmt.Sprintf("%s-%d-%d", prefix, os.Getpid()%10000, seq.Add(1)) }

// run starts a source and returns its events.
func start(t *testing.T, c *kubetest.Cluster, tweak func(*Config)) (*Source, <-chan model.Event) {
	t.Helper()
	cfg := Config{Kubeconfig: c.Kubeconfig, Rediscover: 200 * time.Millisecond, Probe: 200 * time.Millisecond}
	if tweak != nil {
		tweak(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	events := make(chan model.Event, 256)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, func(e model.Event) { events <- e }) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			var b strings.Builder
			_ = pprof.Lookup("goroutine").WriteTo(&b, 1)
			t.Errorf("Run did not return within 10s of its context ending; goroutines:\n%s", b.String())
		}
	})
	return s, events
}

func waitFor(t *testing.T, events <-chan model.Event, what string, ok func(model.Event) bool) model.Event {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case e := <-events:
			if ok(e) {
				return e
			}
		case <-deadline:
			t.Fatalf("never saw %s", what)
			return model.Event{}
		}
	}
}

func has(kind model.Kind, namespace, name string, deleted bool) func(model.Event) bool {
	return func(e model.Event) bool {
		for _, c := range e.Changes {
			if c.Key.Kind == kind && c.Key.Namespace == namespace && c.Key.Name == name && (c.Object == nil) == deleted {
				return true
			}
		}
		return false
	}
}

func meshOf(namespace, tenant string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata: {name: %[1]s, labels: {xdshard.io/tenant: %[2]s}}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: %[1]s}
spec:
  ports: [{name: http, port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: %[1]s, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [192.0.2.10]}]
---
apiVersion: v1
kind: Pod
metadata: {name: web-0, namespace: %[1]s, labels: {app: web}}
spec: {containers: [{name: web, image: example.invalid/web}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: %[1]s}
spec:
  hosts: [web]
  http: [{route: [{destination: {host: web}}]}]
`, namespace, tenant)
}

// TestReadsTheMeshAndFollowsChanges: the first event holds what is in the
// cluster, once every informer synced; then edits and deletes follow, and
// a Pod is cached without its spec.
func TestReadsTheMeshAndFollowsChanges(t *testing.T) {
	c := need(t)
	ctx := context.Background()
	n := ns("shop")
	if err := c.Apply(ctx, meshOf(n, "acme")); err != nil {
		t.Fatal(err)
	}
	_, events := start(t, c, nil)
	first := waitFor(t, events, "the first state", func(e model.Event) bool { return e.Synced })
	for _, k := range []model.Kind{model.KindService, model.KindEndpointSlice, model.KindPod, model.KindVirtualService} {
		name := "web"
		switch k {
		case model.KindEndpointSlice:
			name = "web-1"
		case model.KindPod:
			name = "web-0"
		}
		if !has(k, n, name, false)(first) {
			t.Errorf("the first state lacks %s %s/%s", k, n, name)
		}
	}
	for _, ch := range first.Changes {
		if ch.Key.Kind == model.KindPod && ch.Key.Namespace == n {
			if len(ch.Object.Meta.ManagedFields) > 0 {
				t.Error("the Pod kept its managedFields")
			}
		}
	}
	edited := strings.Replace(meshOf(n, "acme"), "http: [{route: [{destination: {host: web}}]}]", "http: [{timeout: 3s, route: [{destination: {host: web}}]}]", 1)
	if err := c.Apply(ctx, edited); err != nil {
		t.Fatal(err)
	}
	waitFor(t, events, "the VirtualService's edit", has(model.KindVirtualService, n, "web", false))
	if err := c.Delete(ctx, "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: "+n+"}\n"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, events, "the Service's deletion", has(model.KindService, n, "web", true))
}

// TestUndecodableObjectKeepsItsLastGoodCopy: an object the decoder
// refuses (here built by hand: the API server's schema stops most such
// objects before they reach xdshard) is a diagnostic naming it, and the
// copy read before keeps serving.
func TestUndecodableObjectKeepsItsLastGoodCopy(t *testing.T) {
	s := &Source{served: map[model.Key]*model.Object{}, rv: map[model.Key]string{}, refs: map[model.Key]runtime.Object{}, diagnosed: map[model.Key]bool{}, np: newNetpols(), wake: make(chan struct{}, 1), pending: emptyEvent()}
	vs := func(rv string, weight any) *unstructured.Unstructured {
		return &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
			"metadata": map[string]any{"name": "web", "namespace": "shop", "resourceVersion": rv},
			"spec":     map[string]any{"hosts": []any{"web"}, "http": []any{map[string]any{"route": []any{map[string]any{"destination": map[string]any{"host": "web"}, "weight": weight}}}}},
		}}
	}
	key := model.Key{Kind: model.KindVirtualService, Namespace: "shop", Name: "web"}
	s.upsert(model.KindVirtualService, vs("1", 100))
	if ev := s.take(); len(ev.Changes) != 1 || ev.Changes[0].Object == nil {
		t.Fatalf("good object: %+v", ev)
	}
	good := s.served[key]
	s.upsert(model.KindVirtualService, vs("2", "a hundred"))
	ev := s.take()
	if len(ev.Changes) != 0 || s.served[key] != good {
		t.Fatalf("the undecodable update changed what is served: %+v", ev.Changes)
	}
	ds := ev.Diagnostics[diagKey(key)]
	if len(ds) != 1 || ds[0].Object != "VirtualService shop/web" || ds[0].Origin != Origin || ds[0].Warning() {
		t.Fatalf("diagnostics %+v, want one error naming VirtualService shop/web from %s", ds, Origin)
	}
	s.upsert(model.KindVirtualService, vs("3", 100))
	if ev := s.take(); len(ev.Changes) != 1 || ev.Diagnostics[diagKey(key)] != nil || !hasKey(ev.Diagnostics, diagKey(key)) {
		t.Fatalf("the fixed object: %+v, want its change and its diagnostic cleared", ev)
	}
}

func hasKey[V any](m map[string]V, k string) bool { _, ok := m[k]; return ok }

// TestMissingCRDIsReadOnceInstalled: a kind whose CRD is not installed is
// a warning and read as empty, not a failure; installing the CRD later
// starts reading it without a restart.
func TestMissingCRDIsReadOnceInstalled(t *testing.T) {
	c := need(t)
	ctx := context.Background()
	crds, err := kubetest.IstioCRDs()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteCRD(ctx, "sidecars.networking.istio.io"); err != nil {
		t.Fatal(err)
	}
	installed := false
	t.Cleanup(func() { // the cluster is shared: a failure here must not leave the CRD gone for the next test or run
		if !installed {
			_ = c.InstallCRDs(context.Background(), crds, func(kind string) bool { return kind == "Sidecar" })
		}
	})
	// The API server drops a deleted CRD from discovery a moment later;
	// until then the source would start an informer for a kind that no
	// longer lists (under load, the first state never came).
	disco, err := discovery.NewDiscoveryClientForConfig(c.REST())
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
		l, err := disco.ServerResourcesForGroupVersion("networking.istio.io/v1")
		if err != nil || !slices.ContainsFunc(l.APIResources, func(r metav1.APIResource) bool { return r.Name == "sidecars" }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the deleted Sidecar CRD still listed in discovery after a minute (hang check)")
		}
	}
	_, events := start(t, c, nil)
	first := waitFor(t, events, "the first state", func(e model.Event) bool { return e.Synced })
	ds := first.Diagnostics["kubernetes kind Sidecar"]
	if len(ds) != 1 || !ds[0].Warning() || !strings.Contains(ds[0].Message, "not served") {
		t.Fatalf("diagnostics for Sidecar: %+v, want a warning that it is not served", ds)
	}
	if err := c.InstallCRDs(ctx, crds, func(kind string) bool { return kind == "Sidecar" }); err != nil {
		t.Fatal(err)
	}
	installed = true
	n := ns("late")
	if err := c.Apply(ctx, fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata: {name: %[1]s}\n---\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default, namespace: %[1]s}\nspec:\n  egress: [{hosts: [\"./*\"]}]\n", n)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, events, "the Sidecar, once its CRD is installed", has(model.KindSidecar, n, "default", false))
}

// TestNetworkPoliciesOfUnbuiltTenantsStay: at start, before a tenant's
// first build is seen, the NetworkPolicies applied for it before are not
// deleted (a namespace would be left open for a moment); once its build
// says it wants none, they go.
func TestNetworkPoliciesOfUnbuiltTenantsStay(t *testing.T) {
	s := &Source{cfg: Config{ApplyNetworkPolicies: true}, served: map[model.Key]*model.Object{}, np: newNetpols()}
	ns := func(name, tenant string) {
		k := model.Key{Kind: model.KindNamespace, Name: name}
		o := &model.Object{Key: k}
		o.Meta.Labels = map[string]string{model.TenantLabel: tenant}
		s.served[k] = o
	}
	ns("a1", "ta")
	ns("b1", "tb")
	s.np.live["a1/xdshard-tenant-isolation"], s.np.live["b1/xdshard-tenant-isolation"] = true, true
	if got := s.unwanted(nil); len(got) != 0 {
		t.Fatalf("before any build was seen, %v would be deleted", got)
	}
	s.Built("ta", nil) // tenant ta is gone (or wants none)
	if got := s.unwanted(nil); len(got) != 1 || got[0] != "a1/xdshard-tenant-isolation" {
		t.Fatalf("after ta's build: %v, want only ta's policy", got)
	}
}

// TestRelistAfterAnOutage: once the API server answers after an outage,
// every kind is listed again with fresh informers, without waiting out
// client-go's backoff. What is unchanged causes no change; an object
// served that the fresh lists lack (deleted while this replica could not
// see: here one planted by hand) is removed; and the fresh informers
// follow edits from then on.
func TestRelistAfterAnOutage(t *testing.T) {
	c := need(t)
	ctx := context.Background()
	n := ns("relist")
	if err := c.Apply(ctx, meshOf(n, "acme")); err != nil {
		t.Fatal(err)
	}
	s, events := start(t, c, nil)
	waitFor(t, events, "the first state", func(e model.Event) bool { return e.Synced })
	gone := model.Key{Kind: model.KindVirtualService, Namespace: n, Name: "deleted-meanwhile"}
	s.mu.Lock()
	s.served[gone], s.rv[gone] = &model.Object{Key: gone}, "1"
	before := s.informers[model.KindVirtualService]
	s.mu.Unlock()

	s.relist(ctx)
	e := waitFor(t, events, "the deletion the fresh lists show", has(model.KindVirtualService, n, "deleted-meanwhile", true))
	for _, ch := range e.Changes {
		if ch.Key != gone && ch.Key.Namespace == n {
			t.Errorf("relisting changed %s, which did not change", ch.Key)
		}
	}
	s.mu.Lock()
	after := s.informers[model.KindVirtualService]
	s.mu.Unlock()
	if after == before {
		t.Fatal("the VirtualService informer was not replaced")
	}
	edited := strings.Replace(meshOf(n, "acme"), "http: [{route: [{destination: {host: web}}]}]", "http: [{timeout: 4s, route: [{destination: {host: web}}]}]", 1)
	if err := c.Apply(ctx, edited); err != nil {
		t.Fatal(err)
	}
	waitFor(t, events, "an edit after the relist", has(model.KindVirtualService, n, "web", false))
}
