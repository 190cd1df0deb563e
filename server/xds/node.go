package xds

import (
	"fmt"
	"strings"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// Resolver maps a namespace to its tenant.
type Resolver interface {
	TenantOf(namespace string) (tenant string, ok bool)
}

// ResolverFunc adapts a function to Resolver.
type ResolverFunc func(namespace string) (string, bool)

// TenantOf calls f.
func (f ResolverFunc) TenantOf(ns string) (string, bool) { return f(ns) }

var _ Resolver = ResolverFunc(nil)

// Generators named in node metadata GENERATOR, as Istio uses them.
const (
	GeneratorGRPC = "grpc" // proxyless gRPC
	GeneratorAPI  = "api"  // istiod's config-source (MCP) client
)

// metaString reads a string field of node metadata.
// ProxyName is "pod.namespace" of an Istio node ID
// (sidecar~IP~pod.ns~ns.svc.cluster.local), istiod's proxy ID, else the
// node ID.
func ProxyName(node string) string {
	if parts := strings.Split(node, "~"); len(parts) == 4 {
		return parts[2]
	}
	return node
}

func metaString(n *core.Node, key string) string {
	if f := n.GetMetadata().GetFields()[key]; f != nil {
		return f.GetStringValue()
	}
	return ""
}

// nodeNamespace finds the namespace of a node: metadata NAMESPACE, else the
// Istio node ID type~ip~pod.namespace~namespace.svc.cluster.local.
func nodeNamespace(n *core.Node) (string, error) {
	if ns := metaString(n, "NAMESPACE"); ns != "" {
		return ns, nil
	}
	parts := strings.Split(n.GetId(), "~")
	if len(parts) != 4 {
		return "", fmt.Errorf("node id %q is not an Istio node id (type~ip~pod.namespace~namespace.svc.cluster.local) and node metadata has no NAMESPACE; set one of them", n.GetId())
	}
	if ns, _, ok := strings.Cut(parts[3], "."); ok && ns != "" {
		return ns, nil
	}
	if _, ns, ok := strings.Cut(parts[2], "."); ok && ns != "" {
		return ns, nil
	}
	return "", fmt.Errorf("node id %q names no namespace; want type~ip~pod.namespace~namespace.svc.cluster.local", n.GetId())
}
