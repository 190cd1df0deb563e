package server_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/xdshard/xdshard/bench/fleet"
	"github.com/xdshard/xdshard/bench/proxy"
	"github.com/xdshard/xdshard/internal/echo"
	"github.com/xdshard/xdshard/internal/helmtest"
	"github.com/xdshard/xdshard/internal/kubetest"
	"github.com/xdshard/xdshard/internal/proc"
	"github.com/xdshard/xdshard/server"
	"github.com/xdshard/xdshard/server/admin"
	"github.com/xdshard/xdshard/sharding"
	"github.com/xdshard/xdshard/snapshot/source/kube"
	"github.com/xdshard/xdshard/snapshot/source/memory"
)

// The end-to-end tests over a real kube-apiserver and etcd on loopback:
// what the manifest-source tests prove also holds with --kubeconfig.

var (
	kubeOnce    sync.Once
	kubeCluster *kubetest.Cluster
	kubeDir     string
	kubeErr     error
)

// cluster starts the package's API server on first use; TestMain stops it.
func cluster(t *testing.T) *kubetest.Cluster {
	t.Helper()
	bin := kubetest.Binaries(t)
	kubeOnce.Do(func() {
		kubeDir, kubeErr = os.MkdirTemp("", "kubetest")
		if kubeErr == nil {
			kubeCluster, kubeErr = kubetest.Start(context.Background(), bin, kubeDir)
		}
	})
	if kubeErr != nil {
		t.Fatalf("starting the API server: %v", kubeErr)
	}
	return kubeCluster
}

// TestMain stops the package's API server after the tests and then
// checks that no goroutine is left: every replica a test started has
// ended everything it started (Replica.Close waits for it).
func TestMain(m *testing.M) {
	code := m.Run()
	stopCluster()
	proc.RemoveXDShard()
	if code == 0 {
		// The tests' own http.Get calls keep idle connections in the
		// default transport; they are the tests', not a replica's.
		http.DefaultTransport.(*http.Transport).CloseIdleConnections()
		if err := goleak.Find(leakOptions()...); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// leakOptions are the goroutines that outlive a replica by design, each
// with its reason.
func leakOptions() []goleak.Option {
	return []goleak.Option{
		// klog's flush daemon runs for the process (client-go logs
		// through klog).
		goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"),
	}
}

func stopCluster() {
	if kubeCluster != nil {
		kubeCluster.Stop()
	}
	if kubeDir != "" {
		os.RemoveAll(kubeDir)
	}
}

var kubeSeq struct {
	sync.Mutex
	n int
}

// kubeMesh is meshYAML with its namespaces renamed so each test has its
// own (nothing deletes a namespace in this cluster).
func kubeMesh(v1, v2 *echo.Backend, w1, w2 int, shop, other string) string {
	m := fmt.Sprintf(meshYAML, v1.Addr.Port, v2.Addr.Port, w1, w2)
	m = strings.ReplaceAll(m, "shop", shop)
	return strings.ReplaceAll(m, "name: other", "name: "+other)
}

func uniqueNS(prefix string) string {
	kubeSeq.Lock()
	defer kubeSeq.Unlock()
	kubeSeq.n++
	return fmt.Sprintf("%s-%d-%d", prefix, os.Getpid()%10000, kubeSeq.n)
}

func startKubeReplica(t *testing.T, c *kubetest.Cluster) *server.Replica {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	src, err := kube.New(kube.Config{Kubeconfig: c.Kubeconfig, Logger: log, Probe: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return startWith(t, src, log)
}

// TestKubernetesSourceServesGRPCClients: with --kubeconfig, grpc-go's xDS
// client follows an 80/20 split and a header route from VirtualServices
// in the API server, a client of another tenant cannot resolve the host,
// a live `apply` moves the weights, and while the API server is down and
// after it restarts no proxy loses config and later changes still arrive.
func TestKubernetesSourceServesGRPCClients(t *testing.T) {
	c := cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	v1, v2 := echo.Start(t, "v1", "127.0.0.1:0"), echo.Start(t, "v2", "127.0.0.1:0")
	shop, other := uniqueNS("shop"), uniqueNS("other")
	if err := c.Apply(ctx, kubeMesh(v1, v2, 80, 20, shop, other)); err != nil {
		t.Fatal(err)
	}
	r := startKubeReplica(t, c)
	target := "echo." + shop + ".svc.cluster.local:7070"

	conn := dialXDS(t, r.XDSAddr(), shop, target)
	routesLikeMeshYAML(t, ctx, conn, 500, 0.07)

	outsider := dialXDS(t, r.XDSAddr(), other, target)
	octx, ocancel := context.WithTimeout(ctx, 5*time.Second)
	if b, err := echo.Who(octx, outsider); err == nil {
		t.Fatalf("a client of tenant %s reached %s's backend %s", other, shop, b)
	}
	ocancel()

	// A live edit through the API server.
	if err := c.Apply(ctx, kubeMesh(v1, v2, 20, 80, shop, other)); err != nil {
		t.Fatal(err)
	}
	waitSplit(t, ctx, conn, 0.80)

	// The API server goes away: every RPC still works, and the replica
	// stays ready but says it is degraded.
	c.StopAPIServer()
	for i := 0; i < 50; i++ {
		if _, err := echo.Who(ctx, conn); err != nil {
			t.Fatalf("RPC %d failed while the API server was down: %v", i, err)
		}
	}
	eventually(t, "/statusz says degraded while the API server is down", func() bool {
		var st statusz
		getJSON(t, r, "/statusz", &st)
		return st.Status == "degraded"
	})
	if ok, why := r.Ready(); !ok {
		t.Fatalf("not ready while the API server was down: %s", why)
	}
	eventually(t, "xdshard_source_stale_seconds above 0 while the API server is down", func() bool {
		return gaugeNamed(t, r, "xdshard_source_stale_seconds") > 0
	})
	builds := histogramCount(t, r, "xdshard_push_stage_seconds", "build")
	if builds == 0 {
		t.Fatal("no build counted before the restart: the check below would prove nothing")
	}
	// Down long enough (2 s by the source's clock) that it reads
	// everything again when the API server is back.
	relists := gaugeNamed(t, r, "xdshard_source_relists_total")
	eventually(t, "the API server down for 2 s by the source's clock", func() bool {
		return gaugeNamed(t, r, "xdshard_source_stale_seconds") > 2
	})
	if err := c.StartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	// The source reads everything again; nothing changed, so no tenant is
	// rebuilt. A sync point: the relist is counted once what it found was
	// handed to the builder, and the builder is idle once every build it
	// caused is published. Not /statusz's "serving": the cluster is shared
	// by the package's tests, and under -count N the objects other tests
	// left with problems keep it degraded.
	eventually(t, "the source read everything again once the API server was back", func() bool {
		return gaugeNamed(t, r, "xdshard_source_relists_total") > relists
	})
	eventually(t, "every build published", r.Idle)
	if after := histogramCount(t, r, "xdshard_push_stage_seconds", "build"); after != builds {
		t.Fatalf("%d tenant builds after the API server came back with nothing changed, want none", after-builds)
	}
	// A change made after the restart reaches the proxy.
	if err := c.Apply(ctx, kubeMesh(v1, v2, 100, 0, shop, other)); err != nil {
		t.Fatal(err)
	}
	waitSplit(t, ctx, conn, 0)
}

// waitSplit waits until the share of RPCs answered by v2 is near want,
// with no RPC failing meanwhile.
func waitSplit(t *testing.T, ctx context.Context, conn *grpc.ClientConn, want float64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := split(t, ctx, conn, 100)
		if math.Abs(got-want) < 0.15 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("v2's share stayed %.0f%%, want %.0f%%", got*100, want*100)
		}
	}
}

// TestKubernetesRejectionIsAnEvent: an object istiod would reject shows in
// /debug/tenantz naming it, and as a Warning Event on it, with the same
// text, where `kubectl describe` shows it.
func TestKubernetesRejectionIsAnEvent(t *testing.T) {
	c := cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	n := uniqueNS("rej")
	if err := c.Apply(ctx, fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata: {name: %[1]s}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: everything, namespace: %[1]s}
spec:
  hosts: ["*"]
  http: [{route: [{destination: {host: web}}]}]
`, n)); err != nil {
		t.Fatal(err)
	}
	r := startKubeReplica(t, c)
	var text string
	eventually(t, "the rejection in /debug/tenantz", func() bool {
		var tz admin.Tenantz
		getJSON(t, r, "/debug/tenantz", &tz)
		for _, ts := range tz.Tenants {
			for _, d := range ts.Diagnostics {
				if d.Object == "VirtualService "+n+"/everything" && !d.Warning() && d.Origin == kube.Origin {
					text = d.Message
					return true
				}
			}
		}
		return false
	})
	cs, err := kubernetes.NewForConfig(c.REST())
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "a Warning Event on the VirtualService", func() bool {
		evs, err := cs.CoreV1().Events(n).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=everything"})
		if err != nil {
			return false
		}
		for _, e := range evs.Items {
			if e.Reason == kube.EventReason && e.Type == "Warning" && e.Message == text && e.InvolvedObject.Kind == "VirtualService" {
				return true
			}
		}
		return false
	})
}

// TestKubernetesNetworkPoliciesFollowTenants: with ApplyNetworkPolicies the
// generated NetworkPolicies appear in each namespace of a tenant, applied
// server-side by field manager xdshard; a user's own NetworkPolicy of the
// same name is never overwritten; opting the tenant out removes them.
func TestKubernetesNetworkPoliciesFollowTenants(t *testing.T) {
	c := cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	tenant := uniqueNS("np")
	a, b, own := tenant+"-a", tenant+"-b", uniqueNS("own")
	if err := c.Apply(ctx, fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata: {name: %[1]s, labels: {xdshard.io/tenant: %[3]s}}
---
apiVersion: v1
kind: Namespace
metadata: {name: %[2]s, labels: {xdshard.io/tenant: %[3]s}}
---
apiVersion: v1
kind: Namespace
metadata: {name: %[4]s}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: xdshard-tenant-isolation, namespace: %[4]s}
spec:
  podSelector: {matchLabels: {app: mine}}
  policyTypes: [Ingress]
`, a, b, tenant, own)); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	src, err := kube.New(kube.Config{Kubeconfig: c.Kubeconfig, Logger: log, Probe: 200 * time.Millisecond, ApplyNetworkPolicies: true})
	if err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithCancel(context.Background())
	r, err := server.Start(rctx, server.Config{Source: src, XDSAddr: "127.0.0.1:0", Debounce: 20 * time.Millisecond, MaxDelay: 200 * time.Millisecond, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { rcancel(); r.Close() }()
	cs, err := kubernetes.NewForConfig(c.REST())
	if err != nil {
		t.Fatal(err)
	}
	get := func(ns string) (managers []string, ok bool) {
		np, err := cs.NetworkingV1().NetworkPolicies(ns).Get(ctx, "xdshard-tenant-isolation", metav1.GetOptions{})
		if err != nil {
			return nil, false
		}
		for _, m := range np.ManagedFields {
			managers = append(managers, m.Manager)
		}
		return managers, np.Labels["xdshard.io/generated"] == "true"
	}
	for _, ns := range []string{a, b} {
		eventually(t, "the generated NetworkPolicy in "+ns, func() bool {
			m, ok := get(ns)
			return ok && slices.Contains(m, kube.FieldManager)
		})
	}
	if m, generated := get(own); generated || slices.Contains(m, kube.FieldManager) {
		t.Fatalf("the user's own NetworkPolicy in %s was taken over (managers %v)", own, m)
	}

	// Opting the tenant out removes its NetworkPolicies.
	if err := c.Apply(ctx, fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata: {name: %s, labels: {xdshard.io/tenant: %s}, annotations: {xdshard.io/isolation: disabled}}\n", a, tenant)); err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{a, b} {
		eventually(t, "the generated NetworkPolicy in "+ns+" removed", func() bool {
			_, err := cs.NetworkingV1().NetworkPolicies(ns).Get(ctx, "xdshard-tenant-isolation", metav1.GetOptions{})
			return err != nil
		})
	}
	if _, err := cs.NetworkingV1().NetworkPolicies(own).Get(ctx, "xdshard-tenant-isolation", metav1.GetOptions{}); err != nil {
		t.Fatalf("the user's own NetworkPolicy is gone: %v", err)
	}
}

// TestKubernetesRelabelMovesProxies: relabelling a namespace to another
// tenant in the API server moves its proxies: their stream ends, and
// reconnected they receive the new tenant's config (the same CDS version
// as the new tenant's other proxies).
func TestKubernetesRelabelMovesProxies(t *testing.T) {
	c := cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ta, tb := uniqueNS("ta"), uniqueNS("tb")
	a1, a2, b1 := ta+"-1", ta+"-2", tb+"-1"
	nsYAML := func(name, tenant string) string {
		return fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata: {name: %s, labels: {xdshard.io/tenant: %s}}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: svc, namespace: %s}\nspec: {ports: [{name: http, port: 80}]}\n", name, tenant, name)
	}
	if err := c.Apply(ctx, nsYAML(a1, ta)+"---\n"+nsYAML(a2, ta)+"---\n"+nsYAML(b1, tb)); err != nil {
		t.Fatal(err)
	}
	r := startKubeReplica(t, c)
	conn, err := grpc.NewClient(r.XDSAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	run := func(ns string) (*proxy.Proxy, chan error) {
		p := proxy.New(ns, "p-"+ns, false)
		done := make(chan error, 1)
		go func() { done <- p.Run(ctx, conn) }()
		select {
		case <-p.Synced():
		case <-ctx.Done():
			t.Fatalf("a proxy of %s never synced", ns)
		}
		return p, done
	}
	pa1, _ := run(a1)
	pa2, ended := run(a2)
	pb1, _ := run(b1)
	// The cluster is shared with tests running beside this one, whose
	// changes (to istio-system, say) can rebuild every tenant between two
	// proxies' syncs: what holds is that they settle on their tenants'.
	eventually(t, "before the move, a2 with tenant a's clusters and not b's", func() bool {
		return pa2.Latest(proxy.CDS).Version == pa1.Latest(proxy.CDS).Version && pa2.Latest(proxy.CDS).Version != pb1.Latest(proxy.CDS).Version
	})
	if err := c.Apply(ctx, nsYAML(a2, tb)); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-ended:
		if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "moved from tenant") {
			t.Fatalf("a2's stream ended with %v, want Unavailable saying it moved", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a2's stream was not ended after its namespace moved")
	}
	again, _ := run(a2)
	eventually(t, "a2's proxy on tenant b's config", func() bool {
		return again.Latest(proxy.CDS).Version == pb1.Latest(proxy.CDS).Version
	})
}

// TestLeaseMembershipMovesTenants: two replicas find each other through
// Leases in a real API server and split the tenants; when one stops (and
// releases its Lease) the other builds its tenants at once, and a proxy of
// such a tenant keeps its config and receives the next change.
func TestLeaseMembershipMovesTenants(t *testing.T) {
	c := cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	leaseNS := uniqueNS("leases")
	if err := c.Apply(ctx, "apiVersion: v1\nkind: Namespace\nmetadata: {name: "+leaseNS+"}\n"); err != nil {
		t.Fatal(err)
	}
	objs := fleet.Generate(fleet.Spec{Tenants: 6, Services: 2, Endpoints: 1, Seed: 5})
	addrs := freeAddrs(t, 2)
	type rep struct {
		r      *server.Replica
		src    *memory.Source
		cancel context.CancelFunc
		done   chan struct{}
	}
	start := func(i int) rep {
		self := sharding.Member{ID: fmt.Sprint("r", i), Addr: addrs[i]}
		leases, err := sharding.NewLeases(sharding.LeaseConfig{REST: c.REST(), Namespace: leaseNS, Self: self, Duration: 3 * time.Second, Renew: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		rctx, rcancel := context.WithCancel(ctx)
		ready, done := make(chan error, 1), make(chan struct{})
		go func() { defer close(done); leases.Run(rctx, ready) }()
		if err := <-ready; err != nil {
			t.Fatal(err)
		}
		src := memory.New(objs)
		r, err := server.Start(rctx, server.Config{Source: src, XDSAddr: "127.0.0.1:0", Debounce: 20 * time.Millisecond, MaxDelay: 200 * time.Millisecond,
			ReplicaID: self.ID, PeerAddr: self.Addr, Membership: leases})
		if err != nil {
			t.Fatal(err)
		}
		synced(t, r.Synced())
		return rep{r, src, rcancel, done}
	}
	a := start(0)
	defer func() { a.cancel(); a.r.Close(); <-a.done }()
	b := start(1)
	eventually(t, "both replicas see both members and agree on owners", func() bool {
		for i := 0; i < 6; i++ {
			tn := fleet.Tenant(i)
			if a.r.Owner(tn) == "" || a.r.Owner(tn) != b.r.Owner(tn) {
				return false
			}
		}
		return true
	})
	var moved string // a tenant b owns
	for i := 0; i < 6 && moved == ""; i++ {
		if a.r.Owner(fleet.Tenant(i)) == "r1" {
			moved = fleet.Tenant(i)
		}
	}
	if moved == "" {
		t.Fatal("r1 owns none of six tenants")
	}
	eventually(t, "r0 holds none of r1's tenants while no client of them came", func() bool { return a.r.Store().Current(moved) == nil })

	conn, err := grpc.NewClient(a.r.XDSAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	p := proxy.New(moved, "p0", true)
	go func() { _ = p.Run(ctx, conn) }()
	<-p.Synced() // r0 fetched the tenant from r1 for its client

	builds := histogramCount(t, a.r, "xdshard_push_stage_seconds", "build")
	b.cancel() // r1 stops and releases its Lease
	b.r.Close()
	<-b.done
	eventually(t, "r0 owns and builds r1's tenant", func() bool {
		return a.r.Owner(moved) == "r0" && histogramCount(t, a.r, "xdshard_push_stage_seconds", "build") > builds
	})
	eds := p.Latest(proxy.EDS).Version
	idx := 0
	fmt.Sscanf(moved, "tenant-%d", &idx)
	if err := a.src.Apply(ctx, fleet.ScaleEndpoints(idx, 0, 2, 4)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the change reaches the proxy through its tenant's new owner", func() bool { return p.Latest(proxy.EDS).Version != eds })
}

// TestDeployManifestApplies: the API server accepts every object of
// deploy/xdshard.yaml as written (schema, RBAC rules, PDB, HPA,
// NetworkPolicy), and of the chart rendered without TLS.
func TestDeployManifestApplies(t *testing.T) {
	c := cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := c.Apply(ctx, "apiVersion: v1\nkind: Namespace\nmetadata: {name: istio-system}\n"); err != nil {
		t.Fatal(err)
	}
	t.Run("deploy/xdshard.yaml", func(t *testing.T) {
		raw, err := os.ReadFile("../deploy/xdshard.yaml")
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Apply(ctx, string(raw)); err != nil {
			t.Fatalf("deploy/xdshard.yaml: %v", err)
		}
	})
	t.Run("chart without TLS", func(t *testing.T) {
		manifests := helmTemplate(t, "tls.enabled=false", "tls.certManager.enabled=false")
		if !strings.Contains(manifests, "--insecure") {
			t.Fatalf("the chart with tls.enabled=false does not serve plaintext:\n%s", manifests)
		}
		if err := c.Apply(ctx, manifests); err != nil {
			t.Fatalf("the chart with tls.enabled=false: %v", err)
		}
	})
}

// helmTemplate renders deploy/chart/xdshard as release xdshard in
// istio-system with these --set values, by $XDSHARD_ISTIO_BIN/helm.
// Without the variable the test is skipped, and under CI=true it fails,
// as kubetest.Binaries does.
func helmTemplate(t *testing.T, set ...string) string {
	t.Helper()
	var args []string
	for _, s := range set {
		args = append(args, "--set", s)
	}
	return helmtest.Template(t, "xdshard", "../deploy/chart/xdshard", "istio-system", args...)
}
