package server_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// revisionMesh is a mesh whose config objects carry every kind of
// istio.io/rev label an Istio install meets: none (global), the default
// revision's, a canary revision's, and a revision tag's ("prod", as
// `istioctl tag set prod --revision canary` makes). Namespace shop has no
// revision label, namespace pay is labelled for the canary (its proxies
// are injected by the canary istiod), and istio-system is the root.
const revisionMesh = `apiVersion: v1
kind: Namespace
metadata: {name: istio-system}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {xdshard.io/tenant: shop}}
---
apiVersion: v1
kind: Namespace
metadata: {name: pay, labels: {xdshard.io/tenant: pay, istio.io/rev: canary}}
---
apiVersion: v1
kind: Namespace
metadata: {name: legacy, labels: {xdshard.io/tenant: legacy, istio-injection: enabled}}
` + "%s"

func revisionVS(ns, name, rev string) string {
	labels := ""
	if rev != "" {
		labels = fmt.Sprintf(", labels: {istio.io/rev: %s}", rev)
	}
	return fmt.Sprintf(`---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: %s, namespace: %s%s}
spec:
  hosts: [%s.%s.svc.cluster.local]
  http:
    - route:
        - destination: {host: %s.%s.svc.cluster.local}
`, name, ns, labels, name, ns, name, ns)
}

// TestMCPRevisionTable: what an istiod of each revision receives over MCP
// is what Istio's own rule keeps, object by object. The rule, from
// istio.io/istio (pkg/config/model.go LabelsInRevision, applied by
// istiod's Kubernetes config store, pilot/pkg/config/kube/crdclient, and by
// its MCP client, pkg/adsc mcpToPilot): an object without an istio.io/rev
// label is global and every istiod keeps it; an object with one is kept by
// the istiod of exactly that revision, and by an istiod started without a
// revision. The namespace's labels play no part (they choose which istiod
// injects and serves a namespace's proxies, not who sees its config), the
// root namespace is no exception, and a revision tag is no revision:
// istiod's config stores do not resolve tags (LabelsInRevisionOrTags has
// no caller in istiod). The Helm chart starts a non-revisioned istiod with
// REVISION=default, so "default" here is the stock install.
func TestMCPRevisionTable(t *testing.T) {
	type object struct{ ns, name, rev string }
	objects := []object{
		{"shop", "plain", ""}, {"shop", "for-default", "default"}, {"shop", "for-canary", "canary"}, {"shop", "for-prod-tag", "prod"},
		{"pay", "plain", ""}, {"pay", "for-default", "default"}, {"pay", "for-canary", "canary"},
		{"legacy", "plain", ""}, {"legacy", "for-canary", "canary"},
		{"istio-system", "root-plain", ""}, {"istio-system", "root-canary", "canary"},
	}
	// kept[i] says, for objects[i], whether istiods of revision "" (none),
	// "default" and "canary" keep it.
	kept := [][3]bool{
		{true, true, true}, {true, true, false}, {true, false, true}, {true, false, false},
		{true, true, true}, {true, true, false}, {true, false, true},
		{true, true, true}, {true, false, true},
		{true, true, true}, {true, false, true},
	}
	var b strings.Builder
	for _, o := range objects {
		b.WriteString(revisionVS(o.ns, o.name, o.rev))
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "mesh.yaml"), []byte(fmt.Sprintf(revisionMesh, b.String())), 0o644); err != nil {
		t.Fatal(err)
	}
	r := startReplica(t, dir)
	for col, rev := range []string{"", "default", "canary"} {
		got := connectIstiod(t, r, rev)
		var want []string
		for i, o := range objects {
			if kept[i][col] {
				want = append(want, o.ns+"/"+o.name)
			}
		}
		slices.Sort(want)
		if vs := got.names(vsType); !slices.Equal(vs, want) {
			t.Errorf("istiod of revision %q received VirtualServices\n  %v\nwant (Istio's LabelsInRevision)\n  %v", rev, vs, want)
		}
		// The generated isolation policies carry no revision: every
		// istiod enforces them, the canary's included.
		for _, tenant := range []string{"shop", "pay", "legacy"} {
			if name := tenant + "/xdshard-tenant-isolation"; !slices.Contains(got.names(apType), name) {
				t.Errorf("istiod of revision %q lacks the generated AuthorizationPolicy %s: %v", rev, name, got.names(apType))
			}
		}
	}
}
