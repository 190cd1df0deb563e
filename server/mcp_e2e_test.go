package server_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"
	mcpv1 "istio.io/api/mcp/v1alpha1"

	"github.com/xdshard/xdshard/bench/fleet"
	"github.com/xdshard/xdshard/server"
	"github.com/xdshard/xdshard/server/xds"
	"github.com/xdshard/xdshard/snapshot/model"
	"github.com/xdshard/xdshard/snapshot/source/demo"
	"github.com/xdshard/xdshard/snapshot/source/manifest"
)

// istiodTypes are the types a 2026 istiod asks its config source for, in
// its order (ISTIO-WIRE.md).
var istiodTypes = []string{
	"core/v1alpha1/MeshConfig", "security.istio.io/v1/AuthorizationPolicy", "networking.istio.io/v1/DestinationRule",
	"networking.istio.io/v1alpha3/EnvoyFilter", "networking.istio.io/v1/Gateway", "security.istio.io/v1/PeerAuthentication",
	"networking.istio.io/v1beta1/ProxyConfig", "security.istio.io/v1/RequestAuthentication", "networking.istio.io/v1/ServiceEntry",
	"networking.istio.io/v1/Sidecar", "telemetry.istio.io/v1/Telemetry", "extensions.istio.io/v1alpha1/TrafficExtension",
	"networking.istio.io/v1/VirtualService", "extensions.istio.io/v1alpha1/WasmPlugin", "networking.istio.io/v1/WorkloadEntry",
	"networking.istio.io/v1/WorkloadGroup",
}

// istiod is a config-source client that behaves as istiod's does: one
// SotW stream, node metadata GENERATOR api (and ISTIO_REVISION when it
// runs with a revision), a timestamp as the first nonce, every response
// ACKed, and each response taken as the full state of its type.
type istiod struct {
	t      *testing.T
	r      *server.Replica
	node   string // unique: its stream's row in /debug/syncz
	stream discovery.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	state  map[string][]*mcpv1.Resource // type URL -> objects, replaced by each response
	resps  chan *discovery.DiscoveryResponse
	sent   int          // requests sent
	read   atomic.Int64 // responses received
}

var istiods atomic.Int64 // numbers each istiod's pod name

func connectIstiod(t *testing.T, r *server.Replica, revision string) *istiod {
	t.Helper()
	conn, err := grpc.NewClient(r.MCPAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	meta := map[string]any{"GENERATOR": "api", "ISTIO_VERSION": "1.30.0"}
	if revision != "" {
		meta["ISTIO_REVISION"] = revision
	}
	md, _ := structpb.NewStruct(meta)
	node := &core.Node{Id: fmt.Sprintf("sidecar~10.0.0.9~istiod-%d.istio-system~istio-system.svc.cluster.local", istiods.Add(1)), Metadata: md}
	c := &istiod{t: t, r: r, node: node.Id, stream: stream, state: map[string][]*mcpv1.Resource{}, resps: make(chan *discovery.DiscoveryResponse, 64)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			r, err := stream.Recv()
			if err != nil {
				close(c.resps)
				return
			}
			c.read.Add(1)
			c.resps <- r
		}
	}()
	t.Cleanup(func() { cancel(); <-done; conn.Close() })
	nonce := time.Now().Format(time.RFC3339Nano)
	for i, typeURL := range istiodTypes {
		req := &discovery.DiscoveryRequest{TypeUrl: typeURL, ResponseNonce: nonce}
		if i == 0 {
			req.Node = node
		}
		if err := stream.Send(req); err != nil {
			t.Fatal(err)
		}
		c.sent++
	}
	for len(c.state) < len(istiodTypes) {
		c.next()
	}
	return c
}

// next takes one response as the full state of its type, and ACKs it.
func (c *istiod) next() *discovery.DiscoveryResponse {
	c.t.Helper()
	select {
	case r, ok := <-c.resps:
		if !ok {
			c.t.Fatal("stream closed")
		}
		if !slices.Contains(istiodTypes, r.TypeUrl) {
			c.t.Fatalf("response type %q is not one that was asked for (echo it exactly)", r.TypeUrl)
		}
		var objs []*mcpv1.Resource
		for _, a := range r.Resources {
			res := &mcpv1.Resource{}
			if err := a.UnmarshalTo(res); err != nil {
				c.t.Fatalf("%s: item is not an istio.mcp.v1alpha1.Resource: %v", r.TypeUrl, err)
			}
			if strings.Count(res.Metadata.GetName(), "/") != 1 || res.Metadata.GetVersion() == "" {
				c.t.Fatalf("%s: item named %q version %q; want namespace/name and a version", r.TypeUrl, res.Metadata.GetName(), res.Metadata.GetVersion())
			}
			if _, err := res.Body.UnmarshalNew(); err != nil {
				c.t.Fatalf("%s %s: body does not decode: %v", r.TypeUrl, res.Metadata.Name, err)
			}
			objs = append(objs, res)
		}
		c.state[r.TypeUrl] = objs
		if err := c.stream.Send(&discovery.DiscoveryRequest{TypeUrl: r.TypeUrl, VersionInfo: r.VersionInfo, ResponseNonce: r.Nonce}); err != nil {
			c.t.Fatal(err)
		}
		c.sent++
		return r
	case <-time.After(time.Minute):
		c.t.Fatal("istiod got no response within a minute (hang check)")
		return nil
	}
}

// quiet asserts that nothing more comes: once the replica's builder is
// idle and its stream of this istiod has settled (every request sent
// handled, every snapshot published looked at; /debug/syncz), it has
// sent no more than the istiod read, and the test took every response
// read. A sync point, not a wait: it fails only when a push that must
// not come comes (or on a hang).
func (c *istiod) quiet() {
	c.t.Helper()
	eventually(c.t, "every build published", c.r.Idle)
	var st xds.ClientStatus
	eventually(c.t, "the MCP stream of "+c.node+" settled", func() bool {
		var all []xds.ClientStatus
		getJSON(c.t, c.r, "/debug/syncz", &all)
		for _, s := range all {
			if s.Node == c.node {
				st = s
				return s.Settled && s.Requests >= uint64(c.sent)
			}
		}
		return false
	})
	if st.Responses > uint64(c.read.Load()) {
		select {
		case r := <-c.resps:
			c.t.Fatalf("unexpected push of %s with %d items", r.TypeUrl, len(r.Resources))
		case <-time.After(time.Minute):
			c.t.Fatalf("the replica sent %d responses, istiod read %d, and the next did not come within a minute (hang check)", st.Responses, c.read.Load())
		}
	}
	select {
	case r := <-c.resps:
		c.t.Fatalf("unexpected push of %s with %d items", r.TypeUrl, len(r.Resources))
	default:
	}
}

func (c *istiod) names(typeURL string) []string {
	var out []string
	for _, r := range c.state[typeURL] {
		out = append(out, r.Metadata.Name)
	}
	return out
}

func copyDemo(t *testing.T) string {
	dir := t.TempDir()
	if err := demo.WriteTo(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

const vsType = "networking.istio.io/v1/VirtualService"
const apType = "security.istio.io/v1/AuthorizationPolicy"

func TestIstiodConfigSource(t *testing.T) {
	dir := copyDemo(t)
	r, src, _ := startReplicaSource(t, dir)
	all := connectIstiod(t, r, "")
	all.quiet() // everything ACKed: nothing more until something changes

	if n := len(all.state["core/v1alpha1/MeshConfig"]); n != 0 {
		t.Fatalf("MeshConfig answered with %d items, want empty", n)
	}
	if got := all.names(vsType); !slices.Equal(got, []string{"acme-web/reviews", "initech/legacy"}) {
		t.Fatalf("VirtualServices %v", got)
	}
	aps := all.names(apType)
	for _, want := range []string{"acme-data/db-from-web", "acme-web/xdshard-tenant-isolation", "globex/xdshard-tenant-isolation", "initech/xdshard-tenant-isolation"} {
		if !slices.Contains(aps, want) {
			t.Fatalf("AuthorizationPolicies %v lack %s", aps, want)
		}
	}

	// An edit re-sends the full state of the changed type only.
	path := filepath.Join(dir, "40-initech.yaml")
	b, _ := os.ReadFile(path)
	writeAtomic(t, path, strings.Replace(string(b), "weight: 80", "weight: 70", 1))
	resp := all.next()
	if resp.TypeUrl != vsType || len(all.state[vsType]) != 2 {
		t.Fatalf("after a VirtualService edit: %s with %d items, want the full VirtualService state (2)", resp.TypeUrl, len(resp.Resources))
	}
	appliedAndBuilt(t, r, src, dir, path)
	all.quiet()
}

// TestRevisionFollowsObjectLabels: moving a namespace to another
// revision (its istio.io/rev label) changes which istiod injects its
// proxies, not which istiod sees its config: both keep it. Labelling an
// object for a revision takes it from every other revision's istiod, and
// the label's removal gives it back.
func TestRevisionFollowsObjectLabels(t *testing.T) {
	dir := copyDemo(t)
	r, src, _ := startReplicaSource(t, dir)
	rev30 := connectIstiod(t, r, "1-30")
	rev31 := connectIstiod(t, r, "1-31")
	for name, c := range map[string]*istiod{"1-30": rev30, "1-31": rev31} {
		if got := c.names(vsType); !slices.Equal(got, []string{"acme-web/reviews", "initech/legacy"}) {
			t.Fatalf("istiod %s: VirtualServices %v, want every tenant's (none is labelled for a revision)", name, got)
		}
	}

	path := filepath.Join(dir, "00-namespaces.yaml")
	b, _ := os.ReadFile(path)
	moved := strings.Replace(string(b), "name: acme-web\n  labels:\n    xdshard.io/tenant: acme\n    istio.io/rev: \"1-30\"", "name: acme-web\n  labels:\n    xdshard.io/tenant: acme\n    istio.io/rev: \"1-31\"", 1)
	if moved == string(b) {
		t.Fatal("test setup: acme-web's label not found")
	}
	writeAtomic(t, path, moved)
	appliedAndBuilt(t, r, src, dir, path)
	rev30.quiet() // nothing of the mesh's config changed for either istiod
	rev31.quiet()

	path = filepath.Join(dir, "40-initech.yaml")
	b, _ = os.ReadFile(path)
	labelled := strings.Replace(string(b), "kind: VirtualService\nmetadata:\n  name: legacy\n  namespace: initech\n", "kind: VirtualService\nmetadata:\n  name: legacy\n  namespace: initech\n  labels: {istio.io/rev: \"1-31\"}\n", 1)
	if labelled == string(b) {
		t.Fatal("test setup: initech's VirtualService not found")
	}
	writeAtomic(t, path, labelled)
	if resp := rev30.next(); resp.TypeUrl != vsType || !slices.Equal(rev30.names(vsType), []string{"acme-web/reviews"}) {
		t.Fatalf("1-30 after initech/legacy was labelled for 1-31: %s %v", resp.TypeUrl, rev30.names(vsType))
	}
	if resp := rev31.next(); resp.TypeUrl != vsType || !slices.Equal(rev31.names(vsType), []string{"acme-web/reviews", "initech/legacy"}) {
		t.Fatalf("1-31 after initech/legacy was labelled for it: %s %v", resp.TypeUrl, rev31.names(vsType))
	}
	writeAtomic(t, path, string(b))
	if resp := rev30.next(); resp.TypeUrl != vsType || !slices.Equal(rev30.names(vsType), []string{"acme-web/reviews", "initech/legacy"}) {
		t.Fatalf("1-30 after the label was removed: %s %v", resp.TypeUrl, rev30.names(vsType))
	}
}

// writeAtomic replaces a file by rename, as kubectl-style tools and
// Kubernetes ConfigMap mounts do, so the watcher never reads half a file.
func writeAtomic(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp~"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// TestRevisionPropertyOnRandomMeshes: over random meshes whose
// namespaces and objects carry random revision labels, every istiod
// receives exactly the objects Istio's LabelsInRevision keeps for its
// revision: the unlabelled ones and its own.
func TestRevisionPropertyOnRandomMeshes(t *testing.T) {
	revs := []string{"", "1-30", "1-31"}
	labelled := 0
	for seed := uint64(1); seed <= 4; seed++ {
		rng := rand.New(rand.NewPCG(seed, 99))
		objs := fleet.Generate(fleet.Spec{Tenants: 6, Services: 3, Endpoints: 1, Seed: seed})
		revOf := map[string]string{} // "Kind namespace/name" of an Istio object -> its label
		for _, o := range objs {
			if o.Kind != model.KindNamespace && !model.Kinds[o.Kind].Istio {
				continue
			}
			rev := revs[rng.IntN(len(revs))]
			if rev == "" {
				continue
			}
			if o.Meta.Labels == nil {
				o.Meta.Labels = map[string]string{}
			}
			o.Meta.Labels[model.RevisionLabel] = rev
			if o.Kind != model.KindNamespace {
				revOf[string(o.Kind)+" "+o.Namespace+"/"+o.Name] = rev
			}
		}
		dir := t.TempDir()
		f, err := os.Create(filepath.Join(dir, "fleet.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		if err := manifest.Encode(f, objs); err != nil {
			t.Fatal(err)
		}
		f.Close()
		r := startReplica(t, dir)
		whole := connectIstiod(t, r, "")
		for _, rev := range revs[1:] {
			c := connectIstiod(t, r, rev)
			for typeURL, items := range whole.state {
				kind := typeURL[strings.LastIndex(typeURL, "/")+1:]
				var want []string
				for _, o := range items {
					if l := revOf[kind+" "+o.Metadata.Name]; l == "" || l == rev {
						want = append(want, o.Metadata.Name)
					} else {
						labelled++
					}
				}
				if got := c.names(typeURL); !slices.Equal(got, want) {
					t.Fatalf("seed %d: istiod %s received %s %v, want %v", seed, rev, typeURL, got, want)
				}
			}
		}
	}
	if labelled == 0 {
		t.Fatal("no object was labelled for another revision: the property held vacuously")
	}
}
