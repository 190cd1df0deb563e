package xds

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	statusv3 "github.com/envoyproxy/go-control-plane/envoy/service/status/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/types/known/structpb"
)

// istioctl asks syncz as istio's pkg/adsc does: a SotW stream, node id
// "~~.~.svc.cluster.local" with GENERATOR "event", one request per answer.
func istioctlSyncz(t *testing.T, e *env, namespace string) *discovery.DiscoveryResponse {
	t.Helper()
	md, _ := structpb.NewStruct(map[string]any{"GENERATOR": "event", "SERVICE_ACCOUNT": "default", "NAMESPACE": namespace, "ISTIO_VERSION": "65536.65536.65536"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := discovery.NewAggregatedDiscoveryServiceClient(e.conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&discovery.DiscoveryRequest{Node: &core.Node{Id: "~~.~.svc.cluster.local", Metadata: md}, TypeUrl: SynczType}); err != nil {
		t.Fatal(err)
	}
	resp, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// TestSynczForIstioctl: proxy-status over the xDS port lists every proxy
// with its per-type state (SYNCED after an ACK, ERROR after a NACK),
// names this replica in the ISTIOD column, never lists istioctl itself,
// and shows a caller outside istio-system only its own namespace.
func TestSynczForIstioctl(t *testing.T) {
	e := newEnv(t)
	e.mesh("a", 2, 0)
	e.mesh("b", 1, 0)
	good := e.sotw("a", nil)
	good.send(cds, "", "")
	good.ack(good.recv())
	bad := e.sotw("b", nil)
	bad.send(cds, "", "")
	r := bad.recv()
	bad.stream.Send(&discovery.DiscoveryRequest{TypeUrl: cds, ResponseNonce: r.Nonce, ErrorDetail: &status.Status{Message: "rejected by the test"}})
	e.waitType(cds, func(ts TypeStatus) bool { return true })
	deadline := time.Now().Add(10 * time.Second)
	var byNS map[string]statusv3.ConfigStatus
	for time.Now().Before(deadline) {
		resp := istioctlSyncz(t, e, "istio-system")
		var id struct{ Component, ID string }
		if err := json.Unmarshal([]byte(resp.GetControlPlane().GetIdentifier()), &id); err != nil || id.Component != "istiod" || id.ID != "xdshard" {
			t.Fatalf("control_plane.identifier %q, want istiod's JSON naming xdshard", resp.GetControlPlane().GetIdentifier())
		}
		byNS = map[string]statusv3.ConfigStatus{}
		for _, a := range resp.Resources {
			var cc statusv3.ClientConfig
			if err := a.UnmarshalTo(&cc); err != nil {
				t.Fatal(err)
			}
			ns, _ := nodeNamespace(cc.Node)
			// As istiod: the proxy ID (pod.namespace), and of the metadata
			// only what istioctl reads.
			if strings.Contains(cc.Node.GetId(), "~") || !strings.HasSuffix(cc.Node.GetId(), "."+ns) {
				t.Fatalf("syncz node id %q, want istiod's proxy ID pod.namespace", cc.Node.GetId())
			}
			for k := range cc.Node.GetMetadata().GetFields() {
				if k != "NAMESPACE" && k != "CLUSTER_ID" && k != "ISTIO_VERSION" {
					t.Fatalf("syncz shows the proxy's metadata %s; istiod shows only CLUSTER_ID, NAMESPACE and ISTIO_VERSION", k)
				}
			}
			for _, g := range cc.GenericXdsConfigs {
				if g.TypeUrl == cds {
					byNS[ns] = g.ConfigStatus
				}
			}
		}
		if byNS["a"] == statusv3.ConfigStatus_SYNCED && byNS["b"] == statusv3.ConfigStatus_ERROR {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(byNS) != 2 || byNS["a"] != statusv3.ConfigStatus_SYNCED || byNS["b"] != statusv3.ConfigStatus_ERROR {
		t.Fatalf("syncz CDS states %v, want a SYNCED and b ERROR, and no other client", byNS)
	}
	if resp := istioctlSyncz(t, e, "b"); len(resp.Resources) != 1 {
		t.Fatalf("a caller of namespace b saw %d proxies, want only its own one", len(resp.Resources))
	}
}

// TestConfigDumpForIstioctl: `istioctl proxy-status <pod>.<ns>` asks
// config_dump for one proxy: a proxy connected here gets its clusters,
// listeners and routes as Envoy admin dumps; any other gets istiod's "not
// connected" answer, on which istioctl asks the next instance.
func TestConfigDumpForIstioctl(t *testing.T) {
	e := newEnv(t)
	e.mesh("a", 2, 0)
	c := e.sotw("a", nil)
	c.send(cds, "", "")
	c.ack(c.recv())
	e.waitType(cds, func(ts TypeStatus) bool { return ts.Sync == "SYNCED" })
	ask := func(name string) *discovery.DiscoveryResponse {
		md, _ := structpb.NewStruct(map[string]any{"GENERATOR": "event", "NAMESPACE": "istio-system"})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		st, err := discovery.NewAggregatedDiscoveryServiceClient(e.conn).StreamAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&discovery.DiscoveryRequest{Node: &core.Node{Id: "~~.~.svc.cluster.local", Metadata: md}, TypeUrl: ConfigDumpType, ResourceNames: []string{name}}); err != nil {
			t.Fatal(err)
		}
		resp, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	resp := ask("pod-1.a")
	if len(resp.Resources) != 3 {
		t.Fatalf("config_dump of a connected proxy: %d resources, want clusters, listeners and routes", len(resp.Resources))
	}
	var clusters adminv3.ClustersConfigDump
	if err := resp.Resources[0].UnmarshalTo(&clusters); err != nil || len(clusters.DynamicActiveClusters) != 2 {
		t.Fatalf("clusters dump %v (%v), want the tenant's two clusters", &clusters, err)
	}
	resp = ask("elsewhere-7.z")
	if len(resp.Resources) != 1 || string(resp.Resources[0].Value) != notConnected {
		t.Fatalf("config_dump of a proxy not here: %v, want istiod's not-connected answer", resp.Resources)
	}
}
