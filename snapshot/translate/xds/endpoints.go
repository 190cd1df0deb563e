package xds

import (
	"slices"
	"strings"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/xdshard/xdshard/snapshot/model"
)

// selectEndpoints keeps the endpoints carrying every subset label.
func selectEndpoints(eps []*model.Endpoint, labels map[string]string) []*model.Endpoint {
	if len(labels) == 0 {
		return eps
	}
	var out []*model.Endpoint
	for _, e := range eps {
		if model.MatchLabels(labels, e.Labels) {
			out = append(out, e)
		}
	}
	return out
}

// loadAssignment groups endpoints by locality. Each locality's weight is
// the sum of its endpoints' weights, as istiod sets it: grpc-go ignores a
// locality without a weight.
func loadAssignment(name string, p model.Port, eps []*model.Endpoint) *endpoint.ClusterLoadAssignment {
	byLocality := map[string]*endpoint.LocalityLbEndpoints{}
	var order []string
	for _, e := range eps {
		loc := byLocality[e.Locality]
		if loc == nil {
			loc = &endpoint.LocalityLbEndpoints{Locality: locality(e.Locality), LoadBalancingWeight: wrapperspb.UInt32(0)}
			byLocality[e.Locality] = loc
			order = append(order, e.Locality)
		}
		w := e.Weight
		if w == 0 {
			w = 1
		}
		loc.LbEndpoints = append(loc.LbEndpoints, lbEndpoint(e.Address, e.PortFor(p), w, e.Ready))
		loc.LoadBalancingWeight.Value += w
	}
	slices.Sort(order)
	cla := &endpoint.ClusterLoadAssignment{ClusterName: name}
	for _, l := range order {
		cla.Endpoints = append(cla.Endpoints, byLocality[l])
	}
	return cla
}

func lbEndpoint(addr string, port, weight uint32, ready bool) *endpoint.LbEndpoint {
	health := core.HealthStatus_HEALTHY
	if !ready {
		health = core.HealthStatus_UNHEALTHY
	}
	return &endpoint.LbEndpoint{
		HostIdentifier: &endpoint.LbEndpoint_Endpoint{Endpoint: &endpoint.Endpoint{
			Address: socketAddress(addr, port),
		}},
		HealthStatus:        health,
		LoadBalancingWeight: wrapperspb.UInt32(weight),
	}
}

func socketAddress(addr string, port uint32) *core.Address {
	return &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
		Address:       addr,
		PortSpecifier: &core.SocketAddress_PortValue{PortValue: port},
	}}}
}

// locality parses Istio's "region/zone/subzone". An endpoint without one
// still gets an (empty) locality: grpc-go rejects endpoints without.
func locality(s string) *core.Locality {
	if s == "" {
		return &core.Locality{}
	}
	parts := strings.SplitN(s, "/", 3)
	l := &core.Locality{Region: parts[0]}
	if len(parts) > 1 {
		l.Zone = parts[1]
	}
	if len(parts) > 2 {
		l.SubZone = parts[2]
	}
	return l
}
