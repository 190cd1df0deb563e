package server_test

import (
	"context"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/xdshard/xdshard/bench/proxy"
	"github.com/xdshard/xdshard/server"
	"github.com/xdshard/xdshard/server/admin"
	"github.com/xdshard/xdshard/snapshot/model"
	"github.com/xdshard/xdshard/snapshot/source/manifest"
	"github.com/xdshard/xdshard/snapshot/source/memory"
	"github.com/xdshard/xdshard/snapshot/translate"
	"github.com/xdshard/xdshard/snapshot/translate/validate"
)

const dnsMesh = `apiVersion: v1
kind: Namespace
metadata: {name: a}
---
apiVersion: v1
kind: Namespace
metadata: {name: b}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: a}
spec: {clusterIP: 10.96.0.10, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: hl, namespace: a}
spec: {clusterIP: None, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: b}
spec: {clusterIP: 10.96.0.20, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: pub, namespace: b, annotations: {networking.istio.io/exportTo: "*"}}
spec: {clusterIP: 10.96.0.30, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: pub2, namespace: b, annotations: {networking.istio.io/exportTo: "*"}}
spec: {clusterIP: 10.96.0.40, ports: [{name: http, port: 80}]}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: a}
spec:
  egress:
  - hosts: ["./*", "b/pub.b.svc.cluster.local"]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: a, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [10.1.0.5], conditions: {ready: true}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: pub-1, namespace: b, labels: {kubernetes.io/service-name: pub}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [10.2.0.5], conditions: {ready: true}}]
`

// TestDNSDiagnosis asks /debug/dnsz about a proxy of namespace a for every
// reason a name resolves or does not, as `xdshard dns` shows them.
func TestDNSDiagnosis(t *testing.T) {
	var objs []*model.Object
	for _, d := range manifest.Decode("mesh.yaml", []byte(dnsMesh)) {
		if d.Diag != nil {
			t.Fatalf("fixture: %s", d.Diag)
		}
		objs = append(objs, d.Object)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, conn := startPlain(t, server.Config{Source: memory.New(objs), XDSAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0"})
	p := proxy.New("a", "client-1", false)
	go func() { _ = p.Run(ctx, conn) }()
	eventually(t, "the proxy connected", func() bool { return p.Latest(proxy.CDS).Count > 0 })

	ask := func(q url.Values) (admin.DNSAnswer, int, string) {
		resp, err := http.Get("http://" + r.AdminAddr() + "/debug/dnsz?" + q.Encode())
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		var a admin.DNSAnswer
		if resp.StatusCode == 200 {
			if err := json.Unmarshal(body, &a); err != nil {
				t.Fatal(err)
			}
		}
		return a, resp.StatusCode, string(body)
	}
	for _, c := range []struct {
		host     string
		resolves bool
		want     string // in a reason (or the FQDN when it resolves)
	}{
		{"web", true, "web.a.svc.cluster.local"},
		{"web.a.svc.cluster.local", true, "web.a.svc.cluster.local"},
		{"pub.b", true, "pub.b.svc.cluster.local"},
		{"api.b", false, "belongs to tenant b and is not exported to tenant a"},
		{"hl", false, "has no address"},
		{"pub2.b", false, "egress hosts of a Sidecar that applies to its proxies exclude it"},
		{"nosuch", false, "no service of the mesh is named nosuch"},
	} {
		a, code, body := ask(url.Values{"proxy": {"client-1.a"}, "host": {c.host}})
		if code != 200 {
			t.Fatalf("%s: %d %s", c.host, code, body)
		}
		got := a.FQDN
		if !c.resolves {
			got = strings.Join(a.Reasons, "; ")
		}
		if a.Resolves != c.resolves || !strings.Contains(got, c.want) {
			t.Errorf("%s: resolves %v, %q; want %v with %q", c.host, a.Resolves, got, c.resolves, c.want)
		}
		if a.Tenant != "a" || !strings.Contains(strings.Join(a.Notes, " "), "did not ask for the DNS name table") {
			t.Errorf("%s: tenant %q, notes %v; want tenant a and a note that the proxy has no NDS", c.host, a.Tenant, a.Notes)
		}
	}
	if a, _, _ := ask(url.Values{"namespace": {"a"}, "host": {"web"}}); !a.Resolves || a.IPs[0] != "10.96.0.10" {
		t.Errorf("a namespace's view: %+v", a)
	}
	if _, code, body := ask(url.Values{"proxy": {"ghost.a"}, "host": {"web"}}); code != 404 || !strings.Contains(body, "not connected") {
		t.Errorf("a proxy not connected: %d %s", code, body)
	}
}

// TestMCPServicesForIstiod: with MCPServices, istiod (reading MCP as it
// does) receives each tenant's Kubernetes Services as generated
// ServiceEntries: host, cluster IP, ports, and the Service's exportTo,
// each valid by istiod's own rules.
func TestMCPServicesForIstiod(t *testing.T) {
	var objs []*model.Object
	for _, d := range manifest.Decode("mesh.yaml", []byte(dnsMesh)) {
		objs = append(objs, d.Object)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, err := server.Start(ctx, server.Config{Source: memory.New(objs), XDSAddr: "127.0.0.1:0", MCPAddr: "127.0.0.1:0", Build: translate.Options{MCPServices: true}.Compose})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	synced(t, r.Synced())
	ist := connectIstiod(t, r, "")
	entries := map[string]*networking.ServiceEntry{}
	for _, res := range ist.state["networking.istio.io/v1/ServiceEntry"] {
		se := &networking.ServiceEntry{}
		if err := res.Body.UnmarshalTo(se); err != nil {
			t.Fatal(err)
		}
		if res.Metadata.Labels[model.GeneratedLabel] != "true" {
			t.Errorf("%s is not labelled generated", res.Metadata.Name)
		}
		if err := validate.Object(&model.Object{Key: model.Key{Kind: model.KindServiceEntry, Namespace: "a", Name: "x"}, Body: se}); err != nil {
			t.Errorf("%s: istiod would reject it: %v", res.Metadata.Name, err)
		}
		entries[res.Metadata.Name] = se
	}
	web := entries["a/web"]
	if web == nil || web.Hosts[0] != "web.a.svc.cluster.local" || web.Addresses[0] != "10.96.0.10" || web.Ports[0].Number != 80 {
		t.Fatalf("a/web as a ServiceEntry: %v (all: %v)", web, slices.Collect(maps.Keys(entries)))
	}
	if pub := entries["b/pub"]; pub == nil || !slices.Equal(pub.ExportTo, []string{"*"}) {
		t.Fatalf("b/pub keeps its exportTo: %v", pub)
	}
	if ep := web.Endpoints; len(ep) != 1 || ep[0].Address != "10.1.0.5" || ep[0].Ports["http"] != 8080 {
		t.Fatalf("a/web's endpoints: %v", ep)
	}
	if hl := entries["a/hl"]; hl == nil || hl.Resolution != networking.ServiceEntry_NONE {
		t.Fatalf("the headless a/hl: %v, want a NONE entry", hl)
	}
	if _, ok := entries["b/api"]; ok || len(entries) != 3 {
		t.Fatalf("entries %v: want web, pub and hl (api has no ready endpoint yet)", slices.Collect(maps.Keys(entries)))
	}
}
