package xds

import (
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// MCP is served on a port of its own (the replica's MCP address), never
// on the proxies' or the peers' port. istiod dials a config source in
// plaintext or with server-side TLS only (its configSources tlsSettings
// take mode SIMPLE; MUTUAL is a TODO in istio.io/istio
// pilot/pkg/bootstrap/configcontroller.go) and sends no token: nothing on
// its connection proves who it is. So the MCP port asks for no identity,
// and what protects it is the network (the Helm chart's NetworkPolicy
// admits istiod's pods alone); the ports where clients can prove who they
// are refuse MCP, so no proxy identity reads every tenant's config.

// RegisterMCP adds, to the gRPC server of the MCP port, the ADS service
// that serves istiod's config-source streams (node metadata GENERATOR:
// api) and nothing else.
func (s *Server) RegisterMCP(g *grpc.Server) {
	discovery.RegisterAggregatedDiscoveryServiceServer(g, mcpPort{s: s})
}

type mcpPort struct {
	discovery.UnimplementedAggregatedDiscoveryServiceServer
	s *Server
}

func (p mcpPort) StreamAggregatedResources(stream discovery.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	first, err := recvFirst(p.s, stream.Context(), nil, stream.Recv)
	if err != nil {
		return err
	}
	if gen := metaString(first.GetNode(), "GENERATOR"); gen != GeneratorAPI {
		return p.s.refused.refuse("not_mcp", codes.PermissionDenied,
			"this is xdshard's MCP port, for istiod's config-source streams (node metadata GENERATOR: api) only; node %.256q (GENERATOR %.32q) is a proxy: dial the xDS port (serve --xds-addr)",
			first.GetNode().GetId(), gen)
	}
	return p.s.opts.MCP.StreamMCP(stream, first)
}

func (p mcpPort) DeltaAggregatedResources(discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	return status.Error(codes.Unimplemented, "xdshard's MCP port serves istiod's config source over state-of-the-world ADS only, as istiod dials it")
}

// refuseMCP answers an MCP stream on a port other than the MCP port.
func (s *Server) refuseMCP() error {
	return s.refused.refuse("mcp_wrong_port", codes.PermissionDenied,
		"istiod's config source (MCP, node metadata GENERATOR: api) is served on xdshard's MCP port (serve --mcp-addr; 15011 in the Helm chart), not on this one: point meshConfig.configSources at xds://HOST:15011")
}
