package systest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/xds"

	"github.com/xdshard/xdshard/internal/kubetest"
	"github.com/xdshard/xdshard/internal/testpki"
)

// agent is a real istio-agent (pilot-agent) in its proxyless mode, as
// Istio's grpc-agent injection template runs it: no Envoy; it gets its
// workload certificate from istiod's CA with its service account's token,
// proxies its gRPC client's xDS to the discovery address (here xdshard's
// Service) over TLS with that token, and writes the gRPC bootstrap its
// client reads.
type agent struct {
	dir  string
	proc *process
}

// startAgent runs an agent for pod (of namespace ns and service account
// sa) at ip, its status on statusPort, with the CA at caAddr.
func startAgent(t *testing.T, ctx context.Context, c *kubetest.Cluster, bin string, ca *testpki.CA, ns, sa, pod, ip, caAddr string, statusPort int) *agent {
	t.Helper()
	if err := c.Apply(ctx, fmt.Sprintf("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: %s, namespace: %s}\n", sa, ns)); err != nil {
		t.Fatal(err)
	}
	client, err := kubernetes.NewForConfig(c.REST())
	if err != nil {
		t.Fatal(err)
	}
	exp := int64(3600)
	tr, err := client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{Audiences: []string{"istio-ca"}, ExpirationSeconds: &exp}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The pod's mounts: its projected token and the mesh root (the
	// istio-ca-root-cert ConfigMap), where the agent reads them relative to
	// its working directory.
	a := &agent{dir: t.TempDir()}
	writeFiles(t, a.dir, map[string][]byte{
		"var/run/secrets/tokens/istio-token": []byte(tr.Status.Token), "var/run/secrets/istio/root-cert.pem": ca.PEM,
	})
	if err := os.MkdirAll(filepath.Join(a.dir, "certs"), 0o755); err != nil {
		t.Fatal(err)
	}
	proxyConfig := fmt.Sprintf(`{"discoveryAddress": "%s:15010", "controlPlaneAuthPolicy": "MUTUAL_TLS", "configPath": %q, "statusPort": %d}`,
		xdshardService, filepath.Join(a.dir, "etc/istio/proxy"), statusPort)
	env := []string{
		// What the grpc-agent template sets: no Envoy, the gRPC bootstrap
		// and certificates written for the application.
		"DISABLE_ENVOY=true", "ISTIO_META_GENERATOR=grpc", "GRPC_XDS_BOOTSTRAP=" + a.bootstrapPath(), "OUTPUT_CERTS=" + filepath.Join(a.dir, "certs"),
		"ISTIO_META_DNS_CAPTURE=false", "CLOUD_PLATFORM=none",
		"POD_NAME=" + pod, "POD_NAMESPACE=" + ns, "SERVICE_ACCOUNT=" + sa, "INSTANCE_IP=" + ip, "ISTIO_META_CLUSTER_ID=Kubernetes",
		"TRUST_DOMAIN=cluster.local", "PROXY_CONFIG=" + proxyConfig,
		// The CA stays istiod; xDS goes to xdshard, whose certificate
		// names its Service (README: Pointing istio-agent at xdshard).
		"CA_ADDR=" + caAddr, "ISTIOD_SAN=xdshard.istio-system.svc",
	}
	a.proc = start(t, "istio-agent "+ns+"/"+pod, a.dir, env, filepath.Join(bin, "pilot-agent"), "proxy", "sidecar", "--domain", ns+".svc.cluster.local")
	a.proc.waitReady(t, 60*time.Second, "istio-agent "+pod+" ready (its certificate from istiod, its bootstrap written)",
		fmt.Sprintf("http://127.0.0.1:%d/healthz/ready", statusPort))
	return a
}

func (a *agent) bootstrapPath() string {
	return filepath.Join(a.dir, "etc/istio/proxy/grpc-bootstrap.json")
}

// dial dials target through grpc-go's xDS client with the bootstrap the
// agent wrote, as the application in its pod does (GRPC_XDS_BOOTSTRAP).
func (a *agent) dial(t *testing.T, target string) *grpc.ClientConn {
	t.Helper()
	bootstrap, err := os.ReadFile(a.bootstrapPath())
	if err != nil {
		t.Fatal(err)
	}
	res, err := xds.NewXDSResolverWithConfigForTesting(bootstrap)
	if err != nil {
		t.Fatalf("the agent's bootstrap: %v\n%s", err, bootstrap)
	}
	conn, err := grpc.NewClient("xds:///"+target, grpc.WithResolvers(res), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}
