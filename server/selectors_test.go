package server_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/xdshard/xdshard/internal/kubetest"
	"github.com/xdshard/xdshard/server"
	"github.com/xdshard/xdshard/snapshot/source/kube"
)

// Which namespaces are the mesh (issue #25), against the real API server:
// the Kubernetes system namespaces are never tenants and never get a
// generated NetworkPolicy unless a selector picks them, and
// --discovery-selectors (istiod's meshConfig.discoverySelectors) narrows
// the mesh to the namespaces it selects, followed live as they are
// relabelled.

// systemNamespaces are the namespaces the API server makes for itself.
var systemNamespaces = []string{"kube-system", "kube-public", "kube-node-lease"}

const isolation = "xdshard-tenant-isolation"

// within is eventually with a longer wait: the first reconciliation
// applies the policies of every namespace earlier tests left in the shared
// cluster, one API call after another (seconds under the race detector).
func within(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startNetpolReplica starts a replica reading the cluster with
// --apply-network-policies and these discovery selectors.
func startNetpolReplica(t *testing.T, c *kubetest.Cluster, selectors []*metav1.LabelSelector) (*server.Replica, *kube.Source) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	src, err := kube.New(kube.Config{Kubeconfig: c.Kubeconfig, Logger: log, Probe: 200 * time.Millisecond, ApplyNetworkPolicies: true, DiscoverySelectors: selectors})
	if err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithCancel(context.Background())
	r, err := server.Start(rctx, server.Config{Source: src, XDSAddr: "127.0.0.1:0", Debounce: 20 * time.Millisecond, MaxDelay: 200 * time.Millisecond, Logger: log})
	if err != nil {
		rcancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { rcancel(); r.Close() })
	select {
	case <-r.Synced():
	case <-time.After(30 * time.Second):
		t.Fatal("the replica never became ready")
	}
	return r, src
}

// generatedIn lists xdshard's generated NetworkPolicies in ns.
func generatedIn(t *testing.T, ctx context.Context, cs kubernetes.Interface, ns string) []string {
	t.Helper()
	l, err := cs.NetworkingV1().NetworkPolicies(ns).List(ctx, metav1.ListOptions{LabelSelector: "xdshard.io/generated=true"})
	if err != nil {
		t.Fatalf("listing NetworkPolicies in %s: %v", ns, err)
	}
	var names []string
	for _, np := range l.Items {
		names = append(names, np.Name)
	}
	return names
}

// forgetSystemPolicies deletes, when the test ends, any generated
// NetworkPolicy left in the system namespaces, so a failure here (or a
// build without the fix) does not leak into the package's other tests.
func forgetSystemPolicies(t *testing.T, cs kubernetes.Interface) {
	t.Cleanup(func() {
		for _, ns := range systemNamespaces {
			err := cs.NetworkingV1().NetworkPolicies(ns).DeleteCollection(context.Background(), metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: "xdshard.io/generated=true"})
			if err != nil && !apierrors.IsNotFound(err) {
				t.Errorf("cleaning up %s: %v", ns, err)
			}
		}
	})
}

func tenantNS(name, tenant string, labels map[string]string) string {
	l := ""
	if tenant != "" {
		l = "xdshard.io/tenant: " + tenant
	}
	for k, v := range labels {
		if l != "" {
			l += ", "
		}
		l += k + ": " + v
	}
	return fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata: {name: %[1]s, labels: {%[2]s}}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: %[1]s}
spec: {ports: [{name: http, port: 80}]}
`, name, l)
}

// TestKubernetesSystemNamespacesAreNotTenants: with
// --apply-network-policies and no selector, kube-system, kube-public and
// kube-node-lease are not tenants and get no NetworkPolicy (one that an
// earlier xdshard applied there, which cut every pod off CoreDNS, is
// deleted), while default stays a tenant as in istiod, which reads every
// namespace when no selector is set.
func TestKubernetesSystemNamespacesAreNotTenants(t *testing.T) {
	c := cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cs, err := kubernetes.NewForConfig(c.REST())
	if err != nil {
		t.Fatal(err)
	}
	forgetSystemPolicies(t, cs)
	n := uniqueNS("sys")
	// What xdshard before the fix left in kube-system: its own policy,
	// applied by field manager xdshard.
	stale := fmt.Sprintf(`apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: %s, namespace: kube-system, labels: {xdshard.io/generated: "true"}}
spec:
  podSelector: {}
  policyTypes: [Ingress]
  ingress: [{from: [{namespaceSelector: {matchLabels: {xdshard.io/tenant: kube-system}}}]}]
`, isolation)
	if err := c.Apply(ctx, tenantNS(n, "", nil)+"---\n"+stale); err != nil {
		t.Fatal(err)
	}
	r, src := startNetpolReplica(t, c, nil)
	within(t, "the generated NetworkPolicy in the tenant "+n, func() bool { return slices.Contains(generatedIn(t, ctx, cs, n), isolation) })
	tenants := r.Tenants()
	for _, ns := range systemNamespaces {
		if slices.Contains(tenants, ns) {
			t.Errorf("%s is a tenant: %v", ns, tenants)
		}
	}
	if !slices.Contains(tenants, n) || !slices.Contains(tenants, "default") {
		t.Errorf("tenants %v, want %s and default among them", tenants, n)
	}
	for _, ns := range systemNamespaces {
		within(t, "no generated NetworkPolicy in "+ns, func() bool { return len(generatedIn(t, ctx, cs, ns)) == 0 })
	}
	// Nor later: a change rebuilds the tenant, and the reconciliation it
	// wakes applies none there either. Sync points, not a wait: the
	// tenant's new version published, every build done, and every
	// snapshot built reconciled.
	before := r.Store().Current(n).Version
	if err := c.Apply(ctx, fmt.Sprintf("apiVersion: v1\nkind: Service\nmetadata: {name: api, namespace: %s}\nspec: {ports: [{name: http, port: 8080}]}\n", n)); err != nil {
		t.Fatal(err)
	}
	within(t, "the tenant "+n+" rebuilt with its new Service", func() bool { return r.Store().Current(n).Version != before })
	within(t, "every build published", r.Idle)
	within(t, "every build's NetworkPolicies reconciled", src.Reconciled)
	for _, ns := range systemNamespaces {
		if got := generatedIn(t, ctx, cs, ns); len(got) > 0 {
			t.Errorf("generated NetworkPolicies %v in %s", got, ns)
		}
	}
}

// TestKubernetesDiscoverySelectors: with --discovery-selectors (two
// selectors, ORed) and --apply-network-policies, only the namespaces they
// select are tenants and get NetworkPolicies (default and the system
// namespaces, which they do not select, neither); a namespace relabelled
// to match becomes a tenant with its policy, and one relabelled not to
// stops being one and loses its policy, live, also when the rest of its
// tenant stays.
func TestKubernetesDiscoverySelectors(t *testing.T) {
	c := cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	cs, err := kubernetes.NewForConfig(c.REST())
	if err != nil {
		t.Fatal(err)
	}
	forgetSystemPolicies(t, cs)
	token := uniqueNS("mesh") // the label value this test's namespaces are selected by
	tenant := uniqueNS("acme")
	a1, a2, other, mover := tenant+"-1", tenant+"-2", uniqueNS("other"), uniqueNS("mover")
	mesh := map[string]string{"test.xdshard.io/mesh": token}
	alt := map[string]string{"test.xdshard.io/alt": token}
	if err := c.Apply(ctx, tenantNS(a1, tenant, mesh)+"---\n"+tenantNS(a2, tenant, mesh)+"---\n"+tenantNS(other, "", nil)+"---\n"+tenantNS(mover, "", nil)); err != nil {
		t.Fatal(err)
	}
	selectors, err := kube.ParseDiscoverySelectors([]string{
		fmt.Sprintf("[{matchLabels: {test.xdshard.io/mesh: %s}}]", token),
		fmt.Sprintf(`[{"matchExpressions": [{"key": "test.xdshard.io/alt", "operator": "In", "values": [%q]}]}]`, token),
	})
	if err != nil {
		t.Fatal(err)
	}
	r, _ := startNetpolReplica(t, c, selectors)

	// Only the selected namespaces are tenants (istio-system is always
	// read, when an earlier test made it).
	tenantsAre := func(want ...string) func() bool {
		return func() bool {
			var got []string
			for _, tn := range r.Tenants() {
				if tn != "istio-system" {
					got = append(got, tn)
				}
			}
			return slices.Equal(got, want)
		}
	}
	within(t, "tenant "+tenant+" alone", tenantsAre(tenant))
	if got := r.Store().Current(tenant).Namespaces; !slices.Equal(got, []string{a1, a2}) {
		t.Fatalf("tenant %s has namespaces %v, want %s and %s", tenant, got, a1, a2)
	}
	for _, ns := range []string{a1, a2} {
		within(t, "the generated NetworkPolicy in "+ns, func() bool { return slices.Contains(generatedIn(t, ctx, cs, ns), isolation) })
	}
	// None where no selector picks (one an earlier test's replica left in
	// default, a tenant without selectors, is deleted).
	for _, ns := range append([]string{other, mover, "default"}, systemNamespaces...) {
		within(t, "no generated NetworkPolicy in "+ns+", which no selector picks", func() bool { return len(generatedIn(t, ctx, cs, ns)) == 0 })
	}

	// Labelled to match the second selector: mover enters the mesh.
	if err := c.Apply(ctx, tenantNS(mover, "", alt)); err != nil {
		t.Fatal(err)
	}
	within(t, mover+" a tenant once labelled", tenantsAre(tenant, mover))
	within(t, "the generated NetworkPolicy in "+mover, func() bool { return slices.Contains(generatedIn(t, ctx, cs, mover), isolation) })

	// a2 loses its label: it leaves the mesh and its policy goes, while
	// its tenant stays with a1.
	if err := c.Apply(ctx, tenantNS(a2, tenant, nil)); err != nil {
		t.Fatal(err)
	}
	within(t, a2+" out of tenant "+tenant, func() bool {
		s := r.Store().Current(tenant)
		return s != nil && slices.Equal(s.Namespaces, []string{a1})
	})
	within(t, "the generated NetworkPolicy in "+a2+" deleted", func() bool { return len(generatedIn(t, ctx, cs, a2)) == 0 })

	// mover loses its label: no longer a tenant, its policy deleted.
	if err := c.Apply(ctx, tenantNS(mover, "", nil)); err != nil {
		t.Fatal(err)
	}
	within(t, mover+" no longer a tenant", tenantsAre(tenant))
	within(t, "the generated NetworkPolicy in "+mover+" deleted", func() bool { return len(generatedIn(t, ctx, cs, mover)) == 0 })
	if !slices.Contains(generatedIn(t, ctx, cs, a1), isolation) {
		t.Errorf("the generated NetworkPolicy in %s, still in the mesh, is gone", a1)
	}
}
