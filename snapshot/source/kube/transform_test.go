package kube

import (
	"fmt"
	"runtime"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// apiPod is a Pod as the API server sends it: managedFields, a full spec
// with a sidecar, and status with conditions and container statuses.
func apiPod(i int) *unstructured.Unstructured {
	container := func(name string) map[string]any {
		return map[string]any{"name": name, "image": "registry.example/" + name + ":1.2.3",
			"args":      []any{"--port", "8080", "--log-level", "info"},
			"env":       []any{map[string]any{"name": "POD_NAME", "valueFrom": map[string]any{"fieldRef": map[string]any{"fieldPath": "metadata.name"}}}},
			"resources": map[string]any{"requests": map[string]any{"cpu": "100m", "memory": "128Mi"}},
			"ports":     []any{map[string]any{"containerPort": int64(8080), "name": "http"}}}
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Pod",
		"metadata": map[string]any{"name": fmt.Sprintf("web-%d", i), "namespace": "shop",
			"labels":        map[string]any{"app": "web", "version": "v1", "pod-template-hash": "abc123"},
			"annotations":   map[string]any{"kubectl.kubernetes.io/last-applied-configuration": string(make([]byte, 1500))},
			"managedFields": []any{map[string]any{"manager": "kubelet", "operation": "Update", "fieldsV1": map[string]any{"f:status": map[string]any{"f:conditions": map[string]any{}}}}}},
		"spec":   map[string]any{"nodeName": "node-1", "containers": []any{container("web"), container("istio-proxy")}},
		"status": map[string]any{"phase": "Running", "podIP": fmt.Sprintf("10.1.%d.%d", i/250, i%250), "podIPs": []any{map[string]any{"ip": "10.1.0.1"}}, "conditions": []any{map[string]any{"type": "Ready", "status": "True"}}, "containerStatuses": []any{map[string]any{"name": "web", "ready": true, "image": "registry.example/web:1.2.3"}}},
	}}
}

func apiSlice(i int) *unstructured.Unstructured {
	var eps []any
	for j := 0; j < 5; j++ {
		eps = append(eps, map[string]any{"addresses": []any{fmt.Sprintf("10.2.%d.%d", i%250, j)}, "conditions": map[string]any{"ready": true}, "targetRef": map[string]any{"kind": "Pod", "name": fmt.Sprintf("svc-%d-%d", i, j)}, "zone": "zone-a"})
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
		"metadata": map[string]any{"name": fmt.Sprintf("svc-%d-abcde", i), "namespace": "shop", "labels": map[string]any{"kubernetes.io/service-name": fmt.Sprintf("svc-%d", i)},
			"managedFields": []any{map[string]any{"manager": "endpointslice-controller", "operation": "Update"}}},
		"ports": []any{map[string]any{"name": "http", "port": int64(8080)}}, "endpoints": eps,
	}}
}

// TestStripKeepsWhatTheModelReads is the path the heap benchmark measures:
// a Pod keeps its labels, IPs, phase and node, and loses the rest.
func TestStripKeepsWhatTheModelReads(t *testing.T) {
	out, _ := strip(apiPod(7))
	u := out.(*unstructured.Unstructured)
	if u.GetLabels()["app"] != "web" || len(u.GetManagedFields()) != 0 || u.GetAnnotations() != nil {
		t.Fatalf("metadata %v", u.Object["metadata"])
	}
	if ip, _, _ := unstructured.NestedString(u.Object, "status", "podIP"); ip != "10.1.0.7" {
		t.Fatalf("podIP %q", ip)
	}
	if node, _, _ := unstructured.NestedString(u.Object, "spec", "nodeName"); node != "node-1" {
		t.Fatalf("nodeName %q", node)
	}
	if _, found, _ := unstructured.NestedSlice(u.Object, "spec", "containers"); found {
		t.Fatal("containers kept")
	}
}

// BenchmarkHeldObjects measures the heap an informer holds per Pod and per
// EndpointSlice after strip: what a 10,000-pod cluster costs in memory.
func BenchmarkHeldObjects(b *testing.B) {
	for _, c := range []struct {
		name string
		make func(int) *unstructured.Unstructured
	}{{"pod", apiPod}, {"endpointslice", apiSlice}} {
		b.Run(c.name, func(b *testing.B) {
			const n = 10000
			for b.Loop() {
				held := make([]any, 0, n)
				runtime.GC()
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				for i := 0; i < n; i++ {
					o, _ := strip(c.make(i))
					held = append(held, o)
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "heap-B/"+c.name)
				runtime.KeepAlive(held)
			}
		})
	}
}
