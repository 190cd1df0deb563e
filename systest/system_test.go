package systest

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"math"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/xds"

	"github.com/xdshard/xdshard/internal/echo"
	"github.com/xdshard/xdshard/internal/testpki"
)

// The addresses of the deployment, each program on its own loopback IP as
// a pod on its own: xdshard's Service and its three pods, istiod and its
// canary, and the two echo backends of every tenant.
const (
	xdshardService = "127.0.0.10"
	istiodIP       = "127.0.0.21"
	canaryIP       = "127.0.0.22"
)

var replicaIPs = []string{"127.0.0.11", "127.0.0.12", "127.0.0.13"}

// tenants of the mesh; their namespaces carry no label at all.
var tenants = []string{"shop", "pay", "ads"}

// backendIP is where version v (1 or 2) of tenant i's echo answers.
func backendIP(i, v int) string { return fmt.Sprintf("127.0.0.%d", 31+2*i+v-1) }

// tenantYAML is one tenant's config, in the API server only (istiod
// reads the tenant namespaces through xdshard alone): echo, a
// ServiceEntry with two versions, split w1/w2 by a VirtualService.
func tenantYAML(i, w1, w2 int) string {
	ns := tenants[i]
	return fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata: {name: %[1]s}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: echo, namespace: %[1]s}
spec:
  hosts: [echo.%[1]s.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 7070, name: grpc, protocol: GRPC}]
  endpoints:
    - {address: %[2]s, labels: {version: v1}}
    - {address: %[3]s, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo, namespace: %[1]s}
spec:
  host: echo.%[1]s.svc.cluster.local
  subsets:
    - {name: v1, labels: {version: v1}}
    - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo, namespace: %[1]s}
spec:
  hosts: [echo.%[1]s.svc.cluster.local]
  http:
    - route:
        - {destination: {host: echo.%[1]s.svc.cluster.local, subset: v1}, weight: %[4]d}
        - {destination: {host: echo.%[1]s.svc.cluster.local, subset: v2}, weight: %[5]d}
`, ns, backendIP(i, 1), backendIP(i, 2), w1, w2)
}

// canaryOnly is a VirtualService labelled for the canary revision: by
// Istio's rule only the canary istiod keeps it.
const canaryOnly = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: canary-only, namespace: ads, labels: {istio.io/rev: canary}}
spec:
  hosts: [echo.ads.svc.cluster.local]
  http:
    - route: [{destination: {host: echo.ads.svc.cluster.local, subset: v1}}]
`

// expected is what an istiod of revision ("" for the default install)
// keeps of the tenants' namespaces: each tenant's own objects, the
// policies xdshard generates for it, and the canary's labelled one.
func expected(revision string) []string {
	var out []string
	for _, ns := range tenants {
		out = append(out, "ServiceEntry "+ns+"/echo", "DestinationRule "+ns+"/echo", "VirtualService "+ns+"/echo",
			"PeerAuthentication "+ns+"/default", "AuthorizationPolicy "+ns+"/xdshard-tenant-isolation", "Sidecar "+ns+"/default")
	}
	if revision == "canary" {
		out = append(out, "VirtualService ads/canary-only")
	}
	slices.Sort(out)
	return out
}

// TestStockIstiod runs the mission's deployment with the real programs
// and checks, end to end, what issue #23 asks: istiod's config holds every
// tenant's config and the generated policies, and the canary istiod
// exactly what Istio's revision rule gives it; a proxyless gRPC client
// served by istiod follows a VirtualService that reaches istiod only
// through xdshard, and an edit of it through the API server; a namespace
// moved to the canary revision and back keeps its routing; and a replica
// killed while istiod streams MCP from it costs istiod no object.
func TestStockIstiod(t *testing.T) {
	bin := istioBin(t)
	module := istioModule(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	c := startCluster(t, ctx, module)
	ca := testpki.NewCA(t, "mesh root")
	if err := c.Apply(ctx, "apiVersion: v1\nkind: Namespace\nmetadata: {name: istio-system}\n"); err != nil {
		t.Fatal(err)
	}
	var shopBackends []*echo.Backend
	for i := range tenants {
		if err := c.Apply(ctx, tenantYAML(i, 80, 20)); err != nil {
			t.Fatal(err)
		}
		v1, v2 := echo.Start(t, "v1", backendIP(i, 1)+":7070"), echo.Start(t, "v2", backendIP(i, 2)+":7070")
		if i == 0 {
			shopBackends = []*echo.Backend{v1, v2}
		}
	}
	if err := c.Apply(ctx, canaryOnly); err != nil {
		t.Fatal(err)
	}

	chartArgs, tlsDir := installXDShard(t, ctx, c, ca)
	replicas := make([]*replica, len(replicaIPs))
	var mcpEndpoints, xdsEndpoints []string
	for i, ip := range replicaIPs {
		replicas[i] = startReplica(t, c, chartArgs, tlsDir, fmt.Sprintf("xdshard-%d", i), ip)
		mcpEndpoints, xdsEndpoints = append(mcpEndpoints, ip+":15011"), append(xdsEndpoints, ip+":15010")
	}
	mcpService := newService(t, xdshardService+":15011", mcpEndpoints...)
	newService(t, xdshardService+":15010", xdsEndpoints...)

	stable := startIstiod(t, c, bin, module, "", istiodIP, xdshardService+":15011", ca)
	canary := startIstiod(t, c, bin, module, "canary", canaryIP, xdshardService+":15011", ca)

	t.Log("the deployment runs: API server, 3 xdshard replicas from the chart, istiod and its canary from Istio's chart")

	// 1. Every tenant's config and the generated policies, on both.
	for _, d := range []*istiod{stable, canary} {
		want := expected(d.revision)
		eventually(t, 60*time.Second, "istiod "+d.revision+" holding every tenant's config", func() error {
			have, err := d.configz()
			if err != nil {
				return err
			}
			if got := only(have, tenants...); !slices.Equal(got, want) {
				return fmt.Errorf("it holds %v\nwant (Istio's revision rule) %v", got, want)
			}
			return nil
		})
	}

	t.Log("1: both istiods hold every tenant's config and the generated policies, each by Istio's revision rule")

	// From here on, neither istiod may lose a tenant's object at any
	// moment: a watcher samples both until the end.
	watch := watchConfig(t, stable, canary)

	// 2. A proxyless client served by istiod follows xdshard's
	// VirtualService, and its edit through the API server.
	shop := dialIstiod(t, istiodIP, "shop", "client-0", "echo.shop.svc.cluster.local:7070", ca)
	converge(t, ctx, shop, 0.20, "the client of istiod at 80/20")
	if err := c.Apply(ctx, tenantYAML(0, 50, 50)); err != nil {
		t.Fatal(err)
	}
	converge(t, ctx, shop, 0.50, "the client of istiod after the edit to 50/50")
	t.Log("2: a client served by istiod follows xdshard's VirtualService and its edit")

	// 3. A gRPC client behind the real istio-agent (its certificate from
	// istiod's CA, its xDS proxied to xdshard with its token) gets its
	// tenant's config from xdshard; a workload of another namespace,
	// behind its own agent, cannot reach the tenant's service.
	web := startAgent(t, ctx, c, bin, ca, "shop", "web", "web-0", "127.0.0.51", istiodIP+":15012", 15120)
	viaAgent := web.dial(t, "echo.shop.svc.cluster.local:7070")
	converge(t, ctx, viaAgent, 0.50, "the client behind istio-agent, served by xdshard")
	if !servedBy(t, replicas, "web-0.shop") {
		t.Fatal("no xdshard replica lists the agent's proxy web-0.shop in /debug/syncz")
	}
	stranger := startAgent(t, ctx, c, bin, ca, "pay", "web", "web-0", "127.0.0.52", istiodIP+":15012", 15121).
		dial(t, "echo.shop.svc.cluster.local:7070")
	calls := shopBackends[0].Calls() + shopBackends[1].Calls()
	sctx, scancel := context.WithTimeout(ctx, 5*time.Second)
	b, err := echo.Who(sctx, stranger)
	scancel()
	if err == nil || shopBackends[0].Calls()+shopBackends[1].Calls() != calls {
		t.Fatalf("a client of namespace pay reached shop's echo (%s, %v)", b, err)
	}
	t.Logf("3: a client behind istio-agent is served its tenant by xdshard; one of another namespace is refused: %v", err)

	// 4. A canary upgrade: the namespace moves to the canary revision
	// (its proxies, re-injected, connect to the canary istiod) and keeps
	// its routing; then it is rolled back.
	if err := c.Apply(ctx, "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {istio.io/rev: canary}}\n"); err != nil {
		t.Fatal(err)
	}
	moved := dialIstiod(t, canaryIP, "shop", "client-1", "echo.shop.svc.cluster.local:7070", ca)
	converge(t, ctx, moved, 0.50, "the client of the canary istiod after the move")
	if err := c.Apply(ctx, "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {istio.io/rev: default}}\n"); err != nil {
		t.Fatal(err)
	}
	back := dialIstiod(t, istiodIP, "shop", "client-2", "echo.shop.svc.cluster.local:7070", ca)
	converge(t, ctx, back, 0.50, "the client of istiod after the rollback")
	t.Log("4: a namespace moved to the canary revision and back keeps its routing")

	// 5. The replica istiod streams MCP from is killed. istiod
	// reconnects through the Service, here to a replica that served no MCP
	// stream, so holds only its own tenants and those its proxies read: it
	// must answer only once it holds every tenant's state (an MCP response
	// is the whole state of its type; a partial one would delete the rest
	// in istiod). No object is lost meanwhile, and a later edit reaches
	// every client.
	victim, fresh := -1, -1
	for i, r := range replicas {
		switch serving := mcpService.serving(r.ip + ":15011"); {
		case serving && victim < 0:
			victim = i
		case !serving:
			fresh = i
		}
	}
	if victim < 0 || fresh < 0 {
		t.Fatalf("MCP connections through the Service: victim %d, a replica without one %d", victim, fresh)
	}
	mcpService.sendNewTo(replicas[fresh].ip + ":15011")
	replicas[victim].proc.kill()
	eventually(t, 60*time.Second, "istiod's MCP streams on the live replicas", func() error {
		if mcpService.serving(replicas[victim].ip+":15011") || !mcpService.serving(replicas[fresh].ip+":15011") {
			return fmt.Errorf("%d MCP connections open, none yet on %s", mcpService.open(), replicas[fresh].name)
		}
		return nil
	})
	if err := c.Apply(ctx, tenantYAML(0, 100, 0)); err != nil {
		t.Fatal(err)
	}
	for name, conn := range map[string]*grpc.ClientConn{"istiod's client": back, "the canary's client": moved, "the agent's client": viaAgent} {
		converge(t, ctx, conn, 0, name+" after the kill and the edit to 100/0")
	}
	watch.stop()
	t.Logf("5: %s killed while serving MCP; every client converged", replicas[victim].name)
}

// servedBy says whether a replica lists proxy (pod.namespace) in its
// /debug/syncz.
func servedBy(t *testing.T, replicas []*replica, proxy string) bool {
	t.Helper()
	for _, r := range replicas {
		if r.proc.exited() {
			continue
		}
		resp, err := insecureHTTP.Get("https://" + r.ip + ":15014/debug/syncz")
		if err != nil {
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(body), proxy) {
			return true
		}
	}
	return false
}

// converge waits until conn's share of calls answered by v2 is want
// (within 0.1, over 200 calls), every call succeeding.
func converge(t *testing.T, ctx context.Context, conn *grpc.ClientConn, want float64, what string) {
	t.Helper()
	eventually(t, 60*time.Second, what, func() error {
		got, err := echo.Split(ctx, conn, 200, "v2")
		if err != nil {
			return err
		}
		if math.Abs(got-want) > 0.1 {
			return fmt.Errorf("%.0f%% of calls went to v2, want %.0f%%", got*100, want*100)
		}
		return nil
	})
}

// dialIstiod dials target through grpc-go's own xDS client, bootstrapped
// as Istio's proxyless bootstrap makes it (node metadata GENERATOR grpc,
// the pod's namespace), talking plaintext to istiod's xDS port at ip. The
// certificate provider the bootstrap names is what istiod's clusters
// refer to; the client's plaintext channel does not use it.
func dialIstiod(t *testing.T, ip, ns, pod, target string, ca *testpki.CA) *grpc.ClientConn {
	t.Helper()
	dir := t.TempDir()
	crt, key := ca.Issue(t, testpki.Spec{SPIFFE: "spiffe://cluster.local/ns/" + ns + "/sa/default"})
	writeFiles(t, dir, map[string][]byte{"cert-chain.pem": crt, "key.pem": key, "root-cert.pem": ca.PEM})
	bootstrap := fmt.Sprintf(`{
  "xds_servers": [{"server_uri": "%s:15010", "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}],
  "node": {
    "id": "sidecar~127.0.0.1~%s.%s~%s.svc.cluster.local",
    "metadata": {"GENERATOR": "grpc", "NAMESPACE": %q, "CLUSTER_ID": "Kubernetes", "ISTIO_VERSION": "1.29.0"}
  },
  "certificate_providers": {"default": {"plugin_name": "file_watcher", "config": {
    "certificate_file": %q, "private_key_file": %q, "ca_certificate_file": %q, "refresh_interval": "900s"}}}
}`, ip, pod, ns, ns, ns, filepath.Join(dir, "cert-chain.pem"), filepath.Join(dir, "key.pem"), filepath.Join(dir, "root-cert.pem"))
	res, err := xds.NewXDSResolverWithConfigForTesting([]byte(bootstrap))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("xds:///"+target, grpc.WithResolvers(res), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// configWatch samples istiods' configz until stopped and fails the test
// if any sample lacks an object the istiod held at the start.
type configWatch struct {
	t    *testing.T
	done chan struct{}
	wg   sync.WaitGroup
}

func watchConfig(t *testing.T, ds ...*istiod) *configWatch {
	w := &configWatch{t: t, done: make(chan struct{})}
	for _, d := range ds {
		want := expected(d.revision)
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			samples := 0
			for {
				select {
				case <-w.done:
					t.Logf("istiod %q: %d samples of its config, none lacking an object", d.revision, samples)
					return
				case <-time.After(50 * time.Millisecond):
				}
				have, err := d.configz()
				if err != nil {
					continue // istiod busy; the next sample counts
				}
				samples++
				if gone := missing(want, have); len(gone) > 0 {
					t.Errorf("istiod %q lost %v at one moment", d.revision, gone)
					return
				}
			}
		}()
	}
	t.Cleanup(w.stop)
	return w
}

func (w *configWatch) stop() {
	select {
	case <-w.done:
	default:
		close(w.done)
	}
	w.wg.Wait()
}

func insecureTransport() *http.Transport {
	return &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec // a probe, as kubelet's
}
