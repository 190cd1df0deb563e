package fleet

import (
	"fmt"

	"github.com/xdshard/xdshard/snapshot/model"
)

// ScaleEndpoints moves service svc-IDX of tenant to a new generation of n
// endpoints (a rollout or scale event): one EndpointSlice and its Pods.
func ScaleEndpoints(tenant, idx, n, gen int) []model.Change {
	ns := Tenant(tenant)
	name, portName, port := svcName(idx), "http", int32(8080)
	if idx%5 == 4 {
		portName, port = "grpc", 9090
	}
	slice, pods := EndpointSlice(ns, name, portName, port, tenant, idx, n, gen)
	return model.Adds(append([]*model.Object{slice}, pods...))
}

// ShiftWeight sets the v1 weight of service svc-IDX of tenant.
func ShiftWeight(tenant, idx, weight int) []model.Change {
	return model.Adds([]*model.Object{VirtualService(Tenant(tenant), svcName(idx), weight)})
}

// MeshWide changes a service in istio-system, which every tenant sees.
func MeshWide(gen int) []model.Change {
	slice, pods := EndpointSlice(model.SharedNamespace, "shared-0", "http", 8080, 255, 0, 2, gen)
	return model.Adds(append([]*model.Object{slice}, pods...))
}

func svcName(idx int) string { return fmt.Sprintf("svc-%02d", idx) }
