package kube

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/xdshard/xdshard/snapshot/model"
)

// A namespace as the selectors see it: its name, its labels, and whether
// its Namespace object has been read.
type nsCase struct {
	name   string
	labels map[string]string
	known  bool
}

func ns0(name string, kv ...string) nsCase {
	l := map[string]string{"kubernetes.io/metadata.name": name} // as the API server sets it
	for i := 0; i+1 < len(kv); i += 2 {
		l[kv[i]] = kv[i+1]
	}
	return nsCase{name: name, labels: l, known: true}
}

// TestDiscoverySelectorSemantics: which namespaces are the mesh, for
// selectors written as in istiod's meshConfig.discoverySelectors. The
// rules are istiod's (istio.io/istio pkg/kube/namespace/filter.go and
// pkg/config/mesh/labelselector): selectors ORed, matchLabels and
// matchExpressions ANDed within one, {} selects every namespace, no
// selector means every namespace, and a namespace not read yet is out
// while there are selectors. xdshard's two differences: istio-system (the
// root namespace) is always in, and systemNamespaces only through a
// selector that asks for something they carry (matchLabels, In, Exists).
func TestDiscoverySelectorSemantics(t *testing.T) {
	shop, dflt, root := ns0("shop"), ns0("default"), ns0("istio-system")
	ksys, kpub, klease, lps := ns0("kube-system"), ns0("kube-public"), ns0("kube-node-lease"), ns0("local-path-storage")
	labelled := ns0("shop", "istio-discovery", "enabled")
	unread := nsCase{name: "late"}
	cases := []struct {
		name      string
		flags     []string
		in, out   []nsCase
		selectors int
	}{
		{"no selector: every namespace but Kubernetes' own", nil,
			[]nsCase{shop, dflt, root, unread, labelled}, []nsCase{ksys, kpub, klease, lps}, 0},
		{"an empty list is no selector, as in istiod", []string{"[]", ""},
			[]nsCase{shop, dflt, root}, []nsCase{ksys, kpub, klease}, 0},
		{"matchLabels", []string{"[{matchLabels: {istio-discovery: enabled}}]"},
			[]nsCase{labelled, root, ns0("kube-system", "istio-discovery", "enabled")}, []nsCase{shop, dflt, ksys, unread, ns0("shop", "istio-discovery", "disabled")}, 1},
		{"istio's own example: ORed selectors, ANDed requirements",
			[]string{`[{matchLabels: {env: prod, region: us-east1}}, {matchExpressions: [{key: app, operator: In, values: [cassandra, spark]}]}]`},
			[]nsCase{ns0("a", "env", "prod", "region", "us-east1"), ns0("b", "app", "spark"), ns0("c", "app", "cassandra", "env", "dev")},
			[]nsCase{ns0("d", "env", "prod"), ns0("e", "region", "us-east1"), ns0("f", "app", "web"), shop}, 2},
		{"JSON, as the Helm chart passes it", []string{`[{"matchExpressions":[{"key":"team","operator":"Exists"}]}]`},
			[]nsCase{ns0("a", "team", ""), ns0("kube-system", "team", "infra")}, []nsCase{shop, dflt}, 1},
		{"one selector alone, and repeated flags ORed", []string{"{matchLabels: {a: x}}", "matchLabels: {b: z}"},
			[]nsCase{ns0("n1", "a", "x"), ns0("n2", "b", "z")}, []nsCase{ns0("n3", "a", "z"), shop}, 2},
		{"{} selects every namespace but not the system ones", []string{"[{}]"},
			[]nsCase{shop, dflt, root}, []nsCase{ksys, kpub, klease, unread}, 1},
		{"NotIn picks everything else: not the system namespaces",
			[]string{"[{matchExpressions: [{key: team, operator: NotIn, values: [legacy]}]}]"},
			[]nsCase{shop, dflt, ns0("a", "team", "web")}, []nsCase{ns0("b", "team", "legacy"), ksys, ns0("kube-public", "team", "web")}, 1},
		{"DoesNotExist likewise", []string{"[{matchExpressions: [{key: mesh.example/exempt, operator: DoesNotExist}]}]"},
			[]nsCase{shop, dflt}, []nsCase{ns0("a", "mesh.example/exempt", "true"), ksys, klease}, 1},
		{"a system namespace selected by name",
			[]string{"[{}, {matchLabels: {kubernetes.io/metadata.name: kube-public}}]"},
			[]nsCase{kpub, shop}, []nsCase{ksys, klease}, 2},
		{"In by name", []string{"[{matchExpressions: [{key: kubernetes.io/metadata.name, operator: In, values: [kube-system, shop]}]}]"},
			[]nsCase{ksys, shop, root}, []nsCase{dflt, kpub}, 1},
		{"an explicit selector that does not match a system namespace", []string{"[{matchLabels: {env: prod}}]"},
			[]nsCase{ns0("a", "env", "prod")}, []nsCase{ksys, ns0("kube-system", "env", "dev")}, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ls, err := ParseDiscoverySelectors(c.flags)
			if err != nil {
				t.Fatal(err)
			}
			if len(ls) != c.selectors {
				t.Fatalf("%d selectors, want %d", len(ls), c.selectors)
			}
			sels, err := compileSelectors(ls)
			if err != nil {
				t.Fatal(err)
			}
			m := mesh{selectors: sels}
			for _, n := range c.in {
				if !m.includes(n.name, n.labels, n.known) {
					t.Errorf("%s %v (read: %t) is not in the mesh (%s)", n.name, n.labels, n.known, m)
				}
			}
			for _, n := range c.out {
				if m.includes(n.name, n.labels, n.known) {
					t.Errorf("%s %v (read: %t) is in the mesh (%s)", n.name, n.labels, n.known, m)
				}
			}
		})
	}
}

// TestBadDiscoverySelectors: what does not parse, or is no valid selector
// (istiod would log and ignore it), is an error naming the flag, the
// selector and the fix.
func TestBadDiscoverySelectors(t *testing.T) {
	cases := []struct {
		flags []string
		want  []string
	}{
		{[]string{"[{matchExpressions: [{key: app, operator: Equals, values: [web]}]}]"},
			[]string{"--discovery-selectors", "selector 1", `"Equals" is not a valid label selector operator`, "In, NotIn, Exists or DoesNotExist"}},
		{[]string{"[{matchLabels: {a: b}}, {matchExpressions: [{key: app, operator: In}]}]"},
			[]string{"selector 2", "In and NotIn need values"}},
		{[]string{"[{matchExpressions: [{key: app, operator: Exists, values: [x]}]}]"}, []string{"selector 1", "Exists and DoesNotExist take none"}},
		{[]string{"[{matchLabels: {'bad key!': x}}]"}, []string{"selector 1", "bad key!"}},
		{[]string{"[{matchLabels: {a: 'not a value!'}}]"}, []string{"selector 1", "not a value!"}},
		{[]string{"[{matchLabels: {istio-injection: on}}]"}, []string{"quote one YAML reads as a boolean"}},
		{[]string{"[{matchLabel: {a: b}}]"}, []string{`unknown field "matchLabel"`, "meshConfig.discoverySelectors"}},
		{[]string{"[{matchLabels: {a: b}}"}, []string{"not YAML or JSON", "such as"}},
		{[]string{"istio-discovery=enabled"}, []string{"kubectl's label selector syntax", `'[{"matchLabels":{"istio-discovery":"enabled"}}]'`}},
		{[]string{"[null]"}, []string{"selector 1 is null", "{}"}},
		{[]string{"42"}, []string{"neither a list of label selectors nor one"}},
		{[]string{"[{matchLabels: {a: b}}]", "[{matchLabels: [a]}]"}, []string{"value 2 of 2", "matchLabels"}},
	}
	for _, c := range cases {
		_, err := ParseDiscoverySelectors(c.flags)
		if err == nil {
			t.Errorf("%q: accepted", c.flags)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%q: %v\nwant it to say %q", c.flags, err, w)
			}
		}
	}
	// New refuses them too, for a caller that did not parse a flag.
	ls, err := ParseDiscoverySelectors([]string{"[{matchLabels: {a: b}}]"})
	if err != nil {
		t.Fatal(err)
	}
	ls = append(ls, nil)
	if _, err := New(Config{Kubeconfig: "/nonexistent", DiscoverySelectors: ls}); err == nil || !strings.Contains(err.Error(), "selector 2 is null") {
		t.Errorf("New with a null selector: %v", err)
	}
}

// FuzzParseDiscoverySelectors: whatever the flag holds, parsing ends in
// selectors or an error, never a panic, and what parses compiles.
func FuzzParseDiscoverySelectors(f *testing.F) {
	for _, s := range []string{"[{matchLabels: {a: b}}]", "[{}]", "{matchExpressions: [{key: a, operator: NotIn, values: [x]}]}", "[null]", "a=b", "- matchLabels: {a: b}\n- {}", "[{matchExpressions: [{}]}]"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		ls, err := ParseDiscoverySelectors([]string{v})
		if err != nil {
			return
		}
		if _, err := compileSelectors(ls); err != nil {
			t.Fatalf("%q parsed but does not compile: %v", v, err)
		}
	})
}

// TestNetworkPoliciesOutsideTheMeshGo: a generated NetworkPolicy in a
// namespace outside the mesh (one that left it, or kube-system where an
// earlier xdshard applied one) is deleted though its tenant never
// reported a build; in the mesh, one of an unbuilt tenant stays.
func TestNetworkPoliciesOutsideTheMeshGo(t *testing.T) {
	ls, err := ParseDiscoverySelectors([]string{`[{matchLabels: {mesh: "on"}}]`})
	if err != nil {
		t.Fatal(err)
	}
	sels, _ := compileSelectors(ls)
	s := &Source{cfg: Config{ApplyNetworkPolicies: true}, served: map[model.Key]*model.Object{}, np: newNetpols(),
		mesh: mesh{selectors: sels}, nsLabels: map[string]map[string]string{"a1": {"mesh": "on"}, "left": {}, "kube-system": {}}}
	for _, n := range []string{"a1", "left", "kube-system"} {
		s.np.live[n+"/xdshard-tenant-isolation"] = true
	}
	got := s.unwanted(nil)
	slices.Sort(got)
	if want := []string{"kube-system/xdshard-tenant-isolation", "left/xdshard-tenant-isolation"}; !slices.Equal(got, want) {
		t.Fatalf("unwanted %v, want %v", got, want)
	}
}

// TestSystemNamespacesAreNotRead: without selectors, the API server's own
// namespaces and what is in them are not read; default and the rest are.
func TestSystemNamespacesAreNotRead(t *testing.T) {
	c := need(t)
	ctx := context.Background()
	n := ns("plain")
	if err := c.Apply(ctx, fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata: {name: %[1]s}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: %[1]s}\nspec: {ports: [{name: http, port: 80}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: dns, namespace: kube-system}\nspec: {ports: [{name: dns, port: 53}]}\n", n)); err != nil {
		t.Fatal(err)
	}
	_, events := start(t, c, nil)
	first := waitFor(t, events, "the first state", func(e model.Event) bool { return e.Synced })
	for _, ch := range first.Changes {
		if isSystem(namespaceOf(ch.Key)) {
			t.Errorf("read %s", ch.Key)
		}
	}
	for _, want := range []model.Key{{Kind: model.KindNamespace, Name: "default"}, {Kind: model.KindNamespace, Name: n}, {Kind: model.KindService, Namespace: n, Name: "web"}} {
		if !has(want.Kind, want.Namespace, want.Name, false)(first) {
			t.Errorf("the first state lacks %s", want)
		}
	}
}

// TestNamespacesEnterAndLeaveTheMesh: with a selector, only the objects of
// matching namespaces are read; a namespace relabelled to match brings in
// what it holds, and one relabelled not to takes it out, live.
func TestNamespacesEnterAndLeaveTheMesh(t *testing.T) {
	c := need(t)
	ctx := context.Background()
	token := ns("mesh")
	in, out := ns("in"), ns("out")
	nsYAML := func(name string, selected bool) string {
		l := "{}"
		if selected {
			l = "{test.xdshard.io/mesh: " + token + "}"
		}
		return fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata: {name: %s, labels: %s}\n", name, l)
	}
	svc := func(n string) string {
		return fmt.Sprintf("---\napiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: %s}\nspec: {ports: [{name: http, port: 80}]}\n", n)
	}
	if err := c.Apply(ctx, nsYAML(in, true)+svc(in)+"---\n"+nsYAML(out, false)+svc(out)); err != nil {
		t.Fatal(err)
	}
	ls, err := ParseDiscoverySelectors([]string{fmt.Sprintf("[{matchLabels: {test.xdshard.io/mesh: %s}}]", token)})
	if err != nil {
		t.Fatal(err)
	}
	_, events := start(t, c, func(cfg *Config) { cfg.DiscoverySelectors = ls })
	first := waitFor(t, events, "the first state", func(e model.Event) bool { return e.Synced })
	if !has(model.KindService, in, "web", false)(first) || !has(model.KindNamespace, "", in, false)(first) {
		t.Errorf("the first state lacks %s, which the selector picks", in)
	}
	for _, ch := range first.Changes {
		if ns := namespaceOf(ch.Key); ns != in && ns != model.SharedNamespace {
			t.Errorf("read %s, outside the mesh", ch.Key)
		}
	}
	if err := c.Apply(ctx, nsYAML(out, true)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, events, out+"'s Service once it is labelled into the mesh", has(model.KindService, out, "web", false))
	if err := c.Apply(ctx, nsYAML(in, false)); err != nil {
		t.Fatal(err)
	}
	left := waitFor(t, events, in+"'s Service gone once it is labelled out", has(model.KindService, in, "web", true))
	if !has(model.KindNamespace, "", in, true)(left) {
		t.Errorf("%s left the mesh but its Namespace stays in the model: %+v", in, left.Changes)
	}
	// An edit in a namespace outside the mesh is not read.
	if err := c.Apply(ctx, strings.Replace(svc(in), "port: 80", "port: 81", 1)); err != nil {
		t.Fatal(err)
	}
	if err := c.Apply(ctx, strings.Replace(svc(out), "port: 80", "port: 82", 1)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, events, "the edit in "+out+", and none in "+in, func(e model.Event) bool {
		if has(model.KindService, in, "web", false)(e) {
			t.Fatalf("an edit in %s, outside the mesh, was read", in)
		}
		return has(model.KindService, out, "web", false)(e)
	})
}
