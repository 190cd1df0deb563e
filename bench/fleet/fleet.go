package fleet

import (
	"fmt"
	"math/rand/v2"

	networking "istio.io/api/networking/v1alpha3"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/xdshard/xdshard/snapshot/model"
)

// Spec sizes a fleet.
type Spec struct {
	Tenants   int
	Services  int // per tenant
	Endpoints int // per service
	Seed      uint64
}

// Shared is how many services istio-system holds (visible to every tenant).
const Shared = 3

// Tenant returns the namespace (and tenant) name of tenant i.
func Tenant(i int) string { return fmt.Sprintf("tenant-%03d", i) }

// Generate builds the fleet. Proportions follow a typical mesh: every
// service has a DestinationRule with v1/v2 subsets, three in four have a
// weighted VirtualService, every fifth port speaks gRPC, and every fifth
// tenant narrows its egress with a Sidecar.
func Generate(s Spec) []*model.Object {
	rng := rand.New(rand.NewPCG(s.Seed, s.Seed^0x9e3779b97f4a7c15))
	var out []*model.Object
	out = append(out, namespace(model.SharedNamespace, ""))
	for j := 0; j < Shared; j++ {
		out = append(out, service(model.SharedNamespace, fmt.Sprintf("shared-%d", j), 255, j, 2, false)...)
	}
	for i := 0; i < s.Tenants; i++ {
		ns := Tenant(i)
		out = append(out, namespace(ns, ns))
		for j := 0; j < s.Services; j++ {
			name := fmt.Sprintf("svc-%02d", j)
			out = append(out, service(ns, name, i, j, s.Endpoints, j%5 == 4)...)
			out = append(out, destinationRule(ns, name))
			if j%4 != 3 {
				out = append(out, VirtualService(ns, name, 50+rng.IntN(50)))
			}
		}
		if i%5 == 0 {
			out = append(out, sidecar(ns))
		}
	}
	return out
}

func meta(ns, name string, labels map[string]string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels}
}

func object(kind model.Kind, apiVersion string, m metav1.ObjectMeta, body any) *model.Object {
	key := model.Key{Kind: kind, Namespace: m.Namespace, Name: m.Name}
	return &model.Object{Key: key, APIVersion: apiVersion, Meta: m, Origin: model.Origin{File: "fleet"}, Body: body}
}

func namespace(name, tenant string) *model.Object {
	var labels map[string]string
	if tenant != "" {
		labels = map[string]string{model.TenantLabel: tenant}
	}
	m := metav1.ObjectMeta{Name: name, Labels: labels}
	return object(model.KindNamespace, "v1", m, &corev1.Namespace{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"}, ObjectMeta: m})
}

// service returns a Service with its EndpointSlice and Pods.
func service(ns, name string, tenant, idx, endpoints int, grpc bool) []*model.Object {
	port := corev1.ServicePort{Name: "http", Port: 8080}
	if grpc {
		port = corev1.ServicePort{Name: "grpc", Port: 9090}
	}
	sm := meta(ns, name, map[string]string{"app": name})
	svc := &corev1.Service{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Service"}, ObjectMeta: sm, Spec: corev1.ServiceSpec{
		ClusterIP: fmt.Sprintf("10.%d.%d.%d", 96+tenant/250, tenant%250, idx+1),
		Ports:     []corev1.ServicePort{port},
	}}
	out := []*model.Object{object(model.KindService, "v1", sm, svc)}
	slice, pods := EndpointSlice(ns, name, port.Name, port.Port, tenant, idx, endpoints, 0)
	out = append(out, slice)
	return append(out, pods...)
}

// EndpointSlice returns the slice of a service with n endpoints and their
// Pods; gen shifts the addresses, so a churn event is a new generation.
func EndpointSlice(ns, svc, portName string, port int32, tenant, idx, n, gen int) (*model.Object, []*model.Object) {
	ready := true
	sm := meta(ns, svc+"-slice", map[string]string{discoveryv1.LabelServiceName: svc})
	es := &discoveryv1.EndpointSlice{TypeMeta: metav1.TypeMeta{APIVersion: "discovery.k8s.io/v1", Kind: "EndpointSlice"}, ObjectMeta: sm,
		AddressType: discoveryv1.AddressTypeIPv4, Ports: []discoveryv1.EndpointPort{{Name: &portName, Port: &port}}}
	var pods []*model.Object
	for k := 0; k < n; k++ {
		ip := fmt.Sprintf("10.%d.%d.%d", 128+(tenant/250)%64, tenant%250, (idx*16+k+gen)%250+1)
		podName := fmt.Sprintf("%s-%d", svc, k)
		version := "v1"
		if k%2 == 1 {
			version = "v2"
		}
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: &ready},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: podName}})
		pm := meta(ns, podName, map[string]string{"app": svc, "version": version})
		pods = append(pods, object(model.KindPod, "v1", pm, &corev1.Pod{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"}, ObjectMeta: pm, Status: corev1.PodStatus{PodIP: ip}}))
	}
	return object(model.KindEndpointSlice, "discovery.k8s.io/v1", sm, es), pods
}

func destinationRule(ns, name string) *model.Object {
	return object(model.KindDestinationRule, "networking.istio.io/v1", meta(ns, name, nil), &networking.DestinationRule{
		Host: name,
		TrafficPolicy: &networking.TrafficPolicy{
			ConnectionPool: &networking.ConnectionPoolSettings{Http: &networking.ConnectionPoolSettings_HTTPSettings{Http2MaxRequests: 1000}},
		},
		Subsets: []*networking.Subset{
			{Name: "v1", Labels: map[string]string{"version": "v1"}},
			{Name: "v2", Labels: map[string]string{"version": "v2"}},
		},
	})
}

// VirtualService splits name between its v1 and v2 subsets, v1 getting
// weight percent.
func VirtualService(ns, name string, weight int) *model.Object {
	return object(model.KindVirtualService, "networking.istio.io/v1", meta(ns, name, nil), &networking.VirtualService{
		Hosts: []string{name},
		Http: []*networking.HTTPRoute{{
			Route: []*networking.HTTPRouteDestination{
				{Destination: &networking.Destination{Host: name, Subset: "v1"}, Weight: int32(weight)},
				{Destination: &networking.Destination{Host: name, Subset: "v2"}, Weight: int32(100 - weight)},
			},
		}},
	})
}

func sidecar(ns string) *model.Object {
	return object(model.KindSidecar, "networking.istio.io/v1", meta(ns, "default", nil), &networking.Sidecar{
		Egress: []*networking.IstioEgressListener{{Hosts: []string{"./*", model.SharedNamespace + "/*"}}},
	})
}
