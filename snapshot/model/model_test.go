package model

import (
	"maps"
	"slices"
	"testing"

	networking "istio.io/api/networking/v1alpha3"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/xdshard/xdshard/snapshot"
)

func obj(kind Kind, ns, name string, labels map[string]string, body any) *Object {
	meta := metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels}
	switch b := body.(type) {
	case *corev1.Namespace:
		b.ObjectMeta = meta
	case *corev1.Service:
		b.ObjectMeta = meta
	case *corev1.Pod:
		b.ObjectMeta = meta
	case *discoveryv1.EndpointSlice:
		b.ObjectMeta = meta
	}
	return &Object{Key: Key{Kind: kind, Namespace: ns, Name: name}, Meta: meta, Body: body}
}

func add(objs ...*Object) []Change { return Adds(objs) }

func namespace(name, tenant string) *Object {
	var labels map[string]string
	if tenant != "" {
		labels = map[string]string{TenantLabel: tenant}
	}
	return obj(KindNamespace, "", name, labels, &corev1.Namespace{})
}

func service(ns, name string, annotations map[string]string) *Object {
	o := obj(KindService, ns, name, nil, &corev1.Service{Spec: corev1.ServiceSpec{
		ClusterIP: "10.0.0.1",
		Ports:     []corev1.ServicePort{{Name: "http-web", Port: 80}},
	}})
	o.Meta.Annotations = annotations
	o.Body.(*corev1.Service).Annotations = annotations
	return o
}

func slice(ns, svc string, ips ...string) *Object {
	ready := true
	port, name := int32(8080), "http-web"
	es := &discoveryv1.EndpointSlice{Ports: []discoveryv1.EndpointPort{{Name: &name, Port: &port}}}
	for _, ip := range ips {
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}})
	}
	return obj(KindEndpointSlice, ns, svc+"-abc", map[string]string{discoveryv1.LabelServiceName: svc}, es)
}

func pod(ns, name, ip string, labels map[string]string) *Object {
	o := obj(KindPod, ns, name, labels, &corev1.Pod{})
	o.Body.(*corev1.Pod).Status.PodIP = ip
	return o
}

func hosts(v *TenantView) []string {
	var out []string
	for _, s := range v.Services {
		out = append(out, s.Hostname)
	}
	return out
}

func TestTenantsFromNamespaceLabels(t *testing.T) {
	m := NewMesh()
	m.Apply(add(namespace("a-web", "a"), namespace("a-db", "a"), namespace("b", ""), namespace(SharedNamespace, ""),
		service("a-web", "web", nil)))
	if got, want := m.Tenants(), []string{"a", "b", SharedNamespace}; !slices.Equal(got, want) {
		t.Fatalf("tenants %v, want %v", got, want)
	}
	if got := m.Namespaces("a"); !slices.Equal(got, []string{"a-db", "a-web"}) {
		t.Fatalf("namespaces of a: %v", got)
	}
	if tn, ok := m.TenantOf("a-web"); !ok || tn != "a" {
		t.Fatalf("TenantOf(a-web) = %q, %v", tn, ok)
	}
}

func TestIsolationWithSameServiceNames(t *testing.T) {
	m := NewMesh()
	m.Apply(add(namespace("a", ""), namespace("b", ""), namespace(SharedNamespace, ""),
		service("a", "reviews", nil), service("b", "reviews", nil), service(SharedNamespace, "telemetry", nil)))
	a := m.View("a")
	if got, want := hosts(a), []string{"reviews.a.svc.cluster.local", "telemetry.istio-system.svc.cluster.local"}; !slices.Equal(got, want) {
		t.Fatalf("a sees %v, want %v", got, want)
	}
}

func TestExportToByTenant(t *testing.T) {
	m := NewMesh()
	m.Apply(add(namespace("a", ""), namespace("b-1", "b"), namespace("c", ""),
		service("a", "shared", map[string]string{ExportToAnnotation: "b-1"}),
		service("a", "everyone", map[string]string{ExportToAnnotation: "*"}),
		service("a", "hidden", map[string]string{ExportToAnnotation: "~"})))
	if got, want := hosts(m.View("b")), []string{"everyone.a.svc.cluster.local", "shared.a.svc.cluster.local"}; !slices.Equal(got, want) {
		t.Fatalf("b sees %v, want %v", got, want)
	}
	if got, want := hosts(m.View("c")), []string{"everyone.a.svc.cluster.local"}; !slices.Equal(got, want) {
		t.Fatalf("c sees %v, want %v", got, want)
	}
	if got := hosts(m.View("a")); slices.Contains(got, "hidden.a.svc.cluster.local") {
		t.Fatal("exportTo ~ still visible to its owner")
	}
}

func TestApplyReportsAffectedTenants(t *testing.T) {
	m := NewMesh()
	m.Apply(add(namespace("a", ""), namespace("b", ""), namespace("c", ""), namespace(SharedNamespace, ""),
		service("a", "x", map[string]string{ExportToAnnotation: "b"})))
	cases := []struct {
		name string
		c    Change
		want []string
	}{
		{"own change", add(service("c", "y", nil))[0], []string{"c"}},
		{"exported namespace reaches importer", add(pod("a", "p", "10.1.1.1", nil))[0], []string{"a", "b"}},
		{"shared namespace reaches all", add(service(SharedNamespace, "t", nil))[0], []string{"a", "b", "c", SharedNamespace}},
		{"relabel moves between tenants", add(namespace("c", "a"))[0], []string{"a", "c"}},
	}
	for _, tc := range cases {
		got := slices.Sorted(maps.Keys(m.Apply([]Change{tc.c})))
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: affected %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestEndpointsFromSlicesAndPods(t *testing.T) {
	m := NewMesh()
	m.Apply(add(namespace("a", ""), service("a", "web", nil), slice("a", "web", "10.1.0.1", "10.1.0.2"),
		pod("a", "web-1", "10.1.0.1", map[string]string{"version": "v1"})))
	svcs := m.View("a").Services
	if len(svcs) != 1 || len(svcs[0].Endpoints) != 2 {
		t.Fatalf("want one service with two endpoints, got %+v", svcs)
	}
	e := svcs[0].Endpoints[0]
	if e.Labels["version"] != "v1" || e.PortFor(svcs[0].Ports[0]) != 8080 || !e.Ready {
		t.Fatalf("endpoint 10.1.0.1 = %+v, want pod labels and port 8080", e)
	}
	if svcs[0].Ports[0].Protocol != ProtocolHTTP {
		t.Fatalf("port http-web protocol %s", svcs[0].Ports[0].Protocol)
	}
}

func TestServiceEntryWorkloadSelector(t *testing.T) {
	m := NewMesh()
	we := obj(KindWorkloadEntry, "a", "vm-1", map[string]string{"app": "legacy"}, &networking.WorkloadEntry{Address: "10.9.0.1"})
	se := obj(KindServiceEntry, "a", "legacy", nil, &networking.ServiceEntry{
		Hosts:            []string{"legacy.example.com"},
		Ports:            []*networking.ServicePort{{Name: "grpc", Number: 9000, Protocol: "GRPC"}},
		Resolution:       networking.ServiceEntry_STATIC,
		Endpoints:        []*networking.WorkloadEntry{{Address: "10.9.0.2"}},
		WorkloadSelector: &networking.WorkloadSelector{Labels: map[string]string{"app": "legacy"}},
	})
	m.Apply(add(namespace("a", ""), we, se))
	svcs := m.View("a").Services
	if len(svcs) != 1 || len(svcs[0].Endpoints) != 2 || svcs[0].Ports[0].Protocol != ProtocolGRPC {
		t.Fatalf("want legacy.example.com with 2 endpoints over GRPC, got %+v", svcs)
	}
	if svcs[0].Endpoints[0].Labels["app"] != "legacy" {
		t.Fatal("selected WorkloadEntry labels lost")
	}
}

func TestKindFor(t *testing.T) {
	for _, ok := range [][2]string{{"networking.istio.io/v1alpha3", "VirtualService"}, {"networking.istio.io/v1", "Sidecar"}, {"v1", "Service"}, {"discovery.k8s.io/v1", "EndpointSlice"}} {
		if _, err := KindFor(ok[0], ok[1]); err != nil {
			t.Errorf("%v: %v", ok, err)
		}
	}
	for _, bad := range [][2]string{{"networking.istio.io/v2", "VirtualService"}, {"v1", "ConfigMap"}, {"apps/v1", "Service"}} {
		if _, err := KindFor(bad[0], bad[1]); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

// TestBadEndpointAddressCostsOnlyItself: an EndpointSlice address no proxy
// could reach is dropped with a warning on the slice; the Service and its
// other endpoints stay. Before, it failed the tenant's whole build.
func TestBadEndpointAddressCostsOnlyItself(t *testing.T) {
	m := NewMesh()
	m.Apply(add(namespace("shop", ""), service("shop", "web", nil), slice("shop", "web", "10.0.0.5", "", "not-an-ip")))
	v := m.View("shop")
	if len(v.Services) != 1 || len(v.Services[0].Endpoints) != 1 || v.Services[0].Endpoints[0].Address != "10.0.0.5" {
		t.Fatalf("services %+v, want web with the one good endpoint", v.Services)
	}
	warned := 0
	for _, d := range v.Diagnostics {
		if d.Object == "EndpointSlice shop/web-abc" && d.Warning() {
			warned++
		}
	}
	if warned != 2 {
		t.Fatalf("diagnostics %v, want a warning on the slice for each bad address", v.Diagnostics)
	}
}

// TestDiagnosticsSaidAgainChangeNoTenant: a source that reports the same
// diagnostics again (the NetworkPolicy reconciler, on every pass while a
// policy fails to apply) changes no tenant's status, so nothing is
// rebuilt: a rebuild would wake the reconciler, which would report again,
// a loop. New or cleared diagnostics affect their tenant.
func TestDiagnosticsSaidAgainChangeNoTenant(t *testing.T) {
	m := NewMesh()
	m.Apply(add(namespace("a-web", "a"), namespace("b", "")))
	d := []snapshot.Diagnostic{{Severity: snapshot.SeverityError, Object: "NetworkPolicy a-web/x", Namespace: "a-web", Origin: "k8s", Message: "conflict"}}
	if got := m.SetDiagnostics("np a-web/x", d); !maps.Equal(got, map[string]bool{"a": true}) {
		t.Fatalf("first report affects %v, want a", got)
	}
	if got := m.SetDiagnostics("np a-web/x", slices.Clone(d)); len(got) != 0 {
		t.Fatalf("the same report again affects %v, want none", got)
	}
	if got := m.SetDiagnostics("np a-web/x", nil); !maps.Equal(got, map[string]bool{"a": true}) {
		t.Fatalf("clearing affects %v, want a", got)
	}
	if got := m.SetDiagnostics("np a-web/x", nil); len(got) != 0 {
		t.Fatalf("clearing again affects %v, want none", got)
	}
}
