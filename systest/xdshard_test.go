package systest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/xdshard/xdshard/internal/kubetest"
	"github.com/xdshard/xdshard/internal/proc"
	"github.com/xdshard/xdshard/internal/testpki"
)

// xdshardValues are xdshard's chart values the test installs with: the
// defaults (TLS from the xdshard-tls Secret, the MCP port and its
// NetworkPolicy, Leases in istio-system), three replicas, and Leases of 5 s
// so a killed replica's tenants move within the test's patience.
const xdshardValues = `replicaCount: 3
autoscaleEnabled: false
lease: {duration: 5s, renew: 1s}
`

// replica is one xdshard process, a pod of the chart's Deployment on its
// own loopback IP.
type replica struct {
	name, ip string
	proc     *process
}

// installXDShard renders xdshard's chart, applies it to the API server
// (with the Secret cert-manager would make, signed by the mesh's root
// ca), and returns the Deployment's container arguments.
func installXDShard(t *testing.T, ctx context.Context, c *kubetest.Cluster, ca *testpki.CA) (args []string, tlsDir string) {
	t.Helper()
	objs := helmTemplate(t, "xdshard", "../deploy/chart/xdshard", "istio-system", xdshardValues)
	crt, key := ca.Issue(t, testpki.Spec{SPIFFE: "spiffe://cluster.local/ns/istio-system/sa/xdshard",
		DNS: []string{"xdshard.istio-system.svc", "xdshard.istio-system.svc.cluster.local"}})
	secret := fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata: {name: xdshard-tls, namespace: istio-system}
type: kubernetes.io/tls
stringData:
  tls.crt: %q
  tls.key: %q
  ca.crt: %q
`, crt, key, ca.PEM)
	if err := c.Apply(ctx, secret); err != nil {
		t.Fatal(err)
	}
	applyObjects(t, c, objs)
	// The pod mounts the Secret here.
	tlsDir = t.TempDir()
	writeFiles(t, tlsDir, map[string][]byte{"tls.crt": crt, "tls.key": key, "ca.crt": ca.PEM})
	d := find(t, objs, "Deployment", "xdshard")
	args, _ = container(t, d, "xdshard", "", "", "", "")
	return args, tlsDir
}

// startReplica runs one pod of the chart's Deployment: its arguments with
// the downward API's variables substituted as the kubelet does, its
// 0.0.0.0 ports on the pod's IP, the Secret's mount at tlsDir, and the
// API server's kubeconfig for the in-cluster service account.
func startReplica(t *testing.T, c *kubetest.Cluster, chartArgs []string, tlsDir, name, ip string) *replica {
	t.Helper()
	var args []string
	for _, a := range chartArgs {
		a = strings.ReplaceAll(a, "$(POD_NAME)", name)
		a = strings.ReplaceAll(a, "$(POD_IP)", ip)
		a = strings.ReplaceAll(a, "0.0.0.0:", ip+":")
		a = strings.ReplaceAll(a, "/etc/xdshard/tls", tlsDir)
		args = append(args, a)
	}
	if len(args) == 0 || args[0] != "serve" {
		t.Fatalf("the chart's Deployment does not run serve: %q", args)
	}
	args = append(args, "--kubeconfig", c.Kubeconfig)
	r := &replica{name: name, ip: ip}
	r.proc = start(t, name, t.TempDir(), nil, proc.XDShard(t, "../cmd/xdshard"), args...)
	r.proc.waitReady(t, 60*time.Second, name+" ready", r.readyz())
	return r
}

// readyz is the replica's readiness probe (its admin port serves TLS).
func (r *replica) readyz() string { return "https://" + r.ip + ":15014/readyz" }

// applyObjects applies rendered objects to the API server.
func applyObjects(t *testing.T, c *kubetest.Cluster, objs []*unstructured.Unstructured) {
	t.Helper()
	var docs []string
	for _, o := range objs {
		b, err := json.Marshal(o.Object)
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, string(b))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Apply(ctx, strings.Join(docs, "\n---\n")); err != nil {
		t.Fatal(err)
	}
}

var insecureHTTP = &http.Client{Timeout: 5 * time.Second, Transport: insecureTransport()}
