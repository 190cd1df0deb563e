package xds

import (
	"fmt"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/xdshard/xdshard/snapshot"
	"github.com/xdshard/xdshard/snapshot/model"
)

// ClusterName is istiod's name for a service port's cluster:
// outbound|PORT|SUBSET|HOST (SUBSET empty for the whole service).
func ClusterName(port uint32, subset, host string) string {
	return fmt.Sprintf("outbound|%d|%s|%s", port, subset, host)
}

const defaultConnectTimeout = 10 * time.Second

func adsSource() *core.ConfigSource {
	return &core.ConfigSource{
		ConfigSourceSpecifier: &core.ConfigSource_Ads{Ads: &core.AggregatedConfigSource{}},
		ResourceApiVersion:    core.ApiVersion_V3,
	}
}

// clustersFor adds the clusters and endpoints of every port of s, and of
// every subset of dr, its DestinationRule (from drObj).
func (t *translation) clustersFor(s *model.Service, dr *networking.DestinationRule, drObj *model.Object) {
	for _, p := range s.Ports {
		t.addCluster(s, p, dr, drObj, nil)
		for _, ss := range dr.GetSubsets() {
			if ss.Name == "" {
				continue
			}
			t.addCluster(s, p, dr, drObj, ss)
		}
	}
}

func (t *translation) addCluster(s *model.Service, p model.Port, dr *networking.DestinationRule, drObj *model.Object, ss *networking.Subset) {
	subsetName := ""
	var labels map[string]string
	if ss != nil {
		subsetName, labels = ss.Name, ss.Labels
	}
	name := ClusterName(p.Number, subsetName, s.Hostname)
	policy := policyFor(dr, ss, p.Number)
	eps := selectEndpoints(s.Endpoints, labels)
	cla := loadAssignment(name, p, eps)

	base := &cluster.Cluster{Name: name, ConnectTimeout: durationpb.New(defaultConnectTimeout)}
	dns := s.Resolution == "DNS" || s.Resolution == "DNS_ROUND_ROBIN"
	if dns {
		base.ClusterDiscoveryType = &cluster.Cluster_Type{Type: cluster.Cluster_LOGICAL_DNS}
		base.LoadAssignment = dnsAssignment(name, s, p, eps)
		base.DnsLookupFamily = cluster.Cluster_V4_ONLY
	} else {
		base.ClusterDiscoveryType = &cluster.Cluster_Type{Type: cluster.Cluster_EDS}
		base.EdsClusterConfig = &cluster.Cluster_EdsClusterConfig{EdsConfig: adsSource(), ServiceName: name}
		t.out.endpoints = append(t.out.endpoints, named{name: name, msg: cla})
	}
	applyPolicy(base, policy, drObj, t.diags)

	// The Envoy cluster differs from the gRPC one only by HTTP/2 options and
	// TLS; when it needs neither, both views share one message, encoded once.
	envoy := base
	http2 := p.Protocol == model.ProtocolHTTP2 || p.Protocol == model.ProtocolGRPC
	mode := policy.GetTls().GetMode()
	if http2 || mode == networking.ClientTLSSettings_ISTIO_MUTUAL {
		envoy = proto.Clone(base).(*cluster.Cluster)
	}
	if http2 {
		envoy.TypedExtensionProtocolOptions = http2Options()
	}
	if mode == networking.ClientTLSSettings_ISTIO_MUTUAL {
		envoy.TransportSocket = istioMutual(sniFor(p.Number, subsetName, s.Hostname))
	} else if mode == networking.ClientTLSSettings_SIMPLE || mode == networking.ClientTLSSettings_MUTUAL {
		t.diags.warnf(drObj, "tls mode %s (origination with files) is not supported by xdshard; traffic to %s stays plaintext", mode, s.Hostname)
	}
	t.out.clusters = append(t.out.clusters, named{name: name, msg: envoy, eds: !dns})

	grpc := base
	if grpc.LbPolicy != cluster.Cluster_ROUND_ROBIN && grpc.LbPolicy != cluster.Cluster_RING_HASH && grpc.LbPolicy != cluster.Cluster_LEAST_REQUEST {
		grpc = proto.Clone(base).(*cluster.Cluster)
		grpc.LbPolicy = cluster.Cluster_ROUND_ROBIN
		t.diags.warnf(drObj, "load balancer %s is served as ROUND_ROBIN to proxyless gRPC clients, which support only ROUND_ROBIN, LEAST_REQUEST and ring hash", base.LbPolicy)
	}
	t.out.grpcClusters = append(t.out.grpcClusters, named{name: name, msg: grpc, eds: !dns})
}

// applyPolicy sets the DestinationRule's load balancer, connection pool and
// outlier detection on c, reporting what it cannot apply.
func applyPolicy(c *cluster.Cluster, p *networking.TrafficPolicy, drObj *model.Object, d *diagnostics) {
	if p == nil {
		return
	}
	applyLB(c, p.LoadBalancer, drObj, d)
	applyPool(c, p.ConnectionPool)
	applyOutlier(c, p.OutlierDetection)
}

func applyLB(c *cluster.Cluster, lb *networking.LoadBalancerSettings, drObj *model.Object, d *diagnostics) {
	if lb == nil {
		return
	}
	switch {
	case lb.GetConsistentHash() != nil:
		c.LbPolicy = cluster.Cluster_RING_HASH
		size := lb.GetConsistentHash().GetMinimumRingSize()
		if rh := lb.GetConsistentHash().GetRingHash(); rh != nil {
			size = rh.MinimumRingSize
		}
		if size > 0 {
			c.LbConfig = &cluster.Cluster_RingHashLbConfig_{RingHashLbConfig: &cluster.Cluster_RingHashLbConfig{MinimumRingSize: wrapperspb.UInt64(size)}}
		}
	default:
		switch lb.GetSimple() {
		case networking.LoadBalancerSettings_LEAST_REQUEST, networking.LoadBalancerSettings_LEAST_CONN:
			c.LbPolicy = cluster.Cluster_LEAST_REQUEST
		case networking.LoadBalancerSettings_RANDOM:
			c.LbPolicy = cluster.Cluster_RANDOM
		case networking.LoadBalancerSettings_PASSTHROUGH:
			d.warnf(drObj, "loadBalancer PASSTHROUGH is not supported; ROUND_ROBIN is used")
		}
	}
	if lb.LocalityLbSetting != nil || lb.WarmupDurationSecs != nil || lb.Warmup != nil {
		d.warnf(drObj, "loadBalancer localityLbSetting and warmup are not supported by xdshard and are not applied")
	}
}

func applyPool(c *cluster.Cluster, cp *networking.ConnectionPoolSettings) {
	if cp == nil {
		return
	}
	th := &cluster.CircuitBreakers_Thresholds{}
	if tcp := cp.Tcp; tcp != nil {
		if tcp.MaxConnections > 0 {
			th.MaxConnections = wrapperspb.UInt32(uint32(tcp.MaxConnections))
		}
		if tcp.ConnectTimeout != nil {
			c.ConnectTimeout = tcp.ConnectTimeout
		}
	}
	if h := cp.Http; h != nil {
		if h.Http1MaxPendingRequests > 0 {
			th.MaxPendingRequests = wrapperspb.UInt32(uint32(h.Http1MaxPendingRequests))
		}
		if h.Http2MaxRequests > 0 {
			th.MaxRequests = wrapperspb.UInt32(uint32(h.Http2MaxRequests))
		}
		if h.MaxRetries > 0 {
			th.MaxRetries = wrapperspb.UInt32(uint32(h.MaxRetries))
		}
		if h.MaxRequestsPerConnection > 0 {
			c.MaxRequestsPerConnection = wrapperspb.UInt32(uint32(h.MaxRequestsPerConnection))
		}
	}
	c.CircuitBreakers = &cluster.CircuitBreakers{Thresholds: []*cluster.CircuitBreakers_Thresholds{th}}
}

func applyOutlier(c *cluster.Cluster, od *networking.OutlierDetection) {
	if od == nil {
		return
	}
	out := &cluster.OutlierDetection{Interval: od.Interval, BaseEjectionTime: od.BaseEjectionTime}
	if od.Consecutive_5XxErrors != nil {
		out.Consecutive_5Xx = wrapperspb.UInt32(od.Consecutive_5XxErrors.Value)
	}
	if od.ConsecutiveGatewayErrors != nil {
		out.ConsecutiveGatewayFailure = wrapperspb.UInt32(od.ConsecutiveGatewayErrors.Value)
		out.EnforcingConsecutiveGatewayFailure = wrapperspb.UInt32(100)
	}
	if od.MaxEjectionPercent > 0 {
		out.MaxEjectionPercent = wrapperspb.UInt32(uint32(od.MaxEjectionPercent))
	}
	c.OutlierDetection = out
}

func http2Options() map[string]*anypb.Any {
	opts := &httpv3.HttpProtocolOptions{UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{
		ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &core.Http2ProtocolOptions{}},
		},
	}}
	return map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": mustAny(opts)}
}

// sdsSource is how istiod points Envoy at istio-agent's SDS server.
func sdsSource() *core.ConfigSource {
	return &core.ConfigSource{
		ConfigSourceSpecifier: &core.ConfigSource_ApiConfigSource{ApiConfigSource: &core.ApiConfigSource{
			ApiType:                   core.ApiConfigSource_GRPC,
			SetNodeOnFirstMessageOnly: true,
			TransportApiVersion:       core.ApiVersion_V3,
			GrpcServices: []*core.GrpcService{{TargetSpecifier: &core.GrpcService_EnvoyGrpc_{
				EnvoyGrpc: &core.GrpcService_EnvoyGrpc{ClusterName: "sds-grpc"},
			}}},
		}},
		ResourceApiVersion: core.ApiVersion_V3,
	}
}

// istioMutual is Istio's ISTIO_MUTUAL upstream TLS: the workload
// certificate "default" and the root "ROOTCA", both over SDS.
func istioMutual(sni string) *core.TransportSocket {
	ctx := &tlsv3.UpstreamTlsContext{
		Sni: sni,
		CommonTlsContext: &tlsv3.CommonTlsContext{
			AlpnProtocols:                  []string{"istio-peer-exchange", "istio"},
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: "default", SdsConfig: sdsSource()}},
			ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{
				CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
					DefaultValidationContext:         &tlsv3.CertificateValidationContext{},
					ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: "ROOTCA", SdsConfig: sdsSource()},
				},
			},
		},
	}
	return &core.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &core.TransportSocket_TypedConfig{TypedConfig: mustAny(ctx)}}
}

func sniFor(port uint32, subset, host string) string {
	return fmt.Sprintf("outbound_.%d_.%s_.%s", port, subset, host)
}

func mustAny(m proto.Message) *anypb.Any {
	a, err := snapshot.Any(m)
	if err != nil {
		panic(err) // only for well-known, always-encodable messages
	}
	return a
}

// dnsAssignment is the inline endpoint of a LOGICAL_DNS cluster: the first
// endpoint's address, or the host itself.
func dnsAssignment(name string, s *model.Service, p model.Port, eps []*model.Endpoint) *endpoint.ClusterLoadAssignment {
	addr, port := s.Hostname, p.Number
	if p.TargetPort != 0 {
		port = p.TargetPort
	}
	if len(eps) > 0 {
		addr, port = eps[0].Address, eps[0].PortFor(p)
	}
	return &endpoint.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpoint.LocalityLbEndpoints{{
		LbEndpoints: []*endpoint.LbEndpoint{lbEndpoint(addr, port, 1, true)},
	}}}
}
