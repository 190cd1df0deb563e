package systest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/xdshard/xdshard/internal/kubetest"
	"github.com/xdshard/xdshard/internal/testpki"
)

// istiod is a real pilot-discovery, configured as Istio's Helm chart
// (istio-discovery) configures it for a revision, running on its own
// loopback IP with the chart's ports.
type istiod struct {
	revision string // "" for the chart's default install (REVISION=default)
	ip       string
	proc     *process
}

// istiodValues are the istio-discovery chart's values the test installs
// with: xdshard's MCP port as the first config source (server-side TLS, its
// CA from xdshard's Secret, as xdshard's chart NOTES print it), then
// Kubernetes; discoverySelectors keep istiod's own Kubernetes reading to
// istio-system, so everything of the tenants reaches it only through
// xdshard (istiod applies no namespace filter to an MCP source).
//
// ISTIOD_CUSTOM_HOST adds the istiod's IP to the names its certificate
// carries, since istio-agent checks the CA's certificate against the host
// it dials (a pod dials istiod's Service name).
func istiodValues(revision, ip, mcpAddr string) string {
	return fmt.Sprintf(`revision: %q
env: {ISTIOD_CUSTOM_HOST: %q}
global:
  istioNamespace: istio-system
meshConfig:
  discoverySelectors:
    - matchLabels: {kubernetes.io/metadata.name: istio-system}
  configSources:
    - address: xds://%s
      tlsSettings: {mode: SIMPLE, credentialName: xdshard-tls, sni: xdshard.istio-system.svc}
    - address: k8s://
`, revision, ip, mcpAddr)
}

// startIstiod renders the chart for revision, applies its ConfigMaps and
// ServiceAccount, and runs pilot-discovery with the Deployment's
// arguments and environment, its mesh config where the pod mounts it, and
// ca as its plugged-in CA (the cacerts Secret's files).
func startIstiod(t *testing.T, c *kubetest.Cluster, bin, module, revision, ip, mcpAddr string, ca *testpki.CA) *istiod {
	t.Helper()
	objs := helmTemplate(t, "istiod", filepath.Join(module, "manifests", "charts", "istio-control", "istio-discovery"),
		"istio-system", istiodValues(revision, ip, mcpAddr))
	name, cm := "istiod", "istio"
	if revision != "" {
		name, cm = "istiod-"+revision, "istio-"+revision
	}
	var apply []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == "ConfigMap" || o.GetKind() == "ServiceAccount" {
			apply = append(apply, o)
		}
	}
	applyObjects(t, c, apply)
	mesh, _, _ := unstructured.NestedString(find(t, objs, "ConfigMap", cm).Object, "data", "mesh")
	networks, _, _ := unstructured.NestedString(find(t, objs, "ConfigMap", cm).Object, "data", "meshNetworks")
	args, env := container(t, find(t, objs, "Deployment", name), "discovery", name+"-0", "istio-system", name, ip)
	dir := t.TempDir()
	// The pod's mounts, relative to its working directory as istiod's
	// defaults are: the mesh config, and the plugged-in CA.
	writeFiles(t, dir, map[string][]byte{
		"etc/istio/config/mesh": []byte(mesh), "etc/istio/config/meshNetworks": []byte(networks),
		"etc/cacerts/ca-cert.pem": ca.PEM, "etc/cacerts/ca-key.pem": ca.KeyPEM(t),
		"etc/cacerts/root-cert.pem": ca.PEM, "etc/cacerts/cert-chain.pem": ca.PEM,
	})
	args = append(args, "--kubeconfig", c.Kubeconfig,
		"--grpcAddr", ip+":15010", "--secureGRPCAddr", ip+":15012", "--httpAddr", ip+":8080",
		"--httpsAddr", ip+":15017", "--monitoringAddr", ip+":15014")
	env = append(env, "KUBECONFIG="+c.Kubeconfig, "GOMAXPROCS=2")
	d := &istiod{revision: revision, ip: ip}
	d.proc = start(t, name, dir, env, filepath.Join(bin, "pilot-discovery"), args...)
	// Ready once every config source has synced: for the MCP source, one
	// response to each type istiod asked for.
	d.proc.waitReady(t, 90*time.Second, name+" ready", "http://"+ip+":8080/ready")
	return d
}

// configz returns what istiod holds, as "Kind namespace/name" sorted,
// from its /debug/configz.
func (d *istiod) configz() ([]string, error) {
	resp, err := http.Get("http://" + d.ip + ":8080/debug/configz")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("configz: %s: %s", resp.Status, body)
	}
	var objs []struct {
		Kind     string `json:"kind"`
		Metadata struct {
			Name, Namespace string
		} `json:"metadata"`
	}
	if err := json.Unmarshal(body, &objs); err != nil {
		return nil, fmt.Errorf("configz: %v", err)
	}
	var out []string
	for _, o := range objs {
		out = append(out, o.Kind+" "+o.Metadata.Namespace+"/"+o.Metadata.Name)
	}
	sort.Strings(out)
	return out, nil
}

// missing lists the entries of want that have are not in have.
func missing(want, have []string) []string {
	var out []string
	for _, w := range want {
		if !slices.Contains(have, w) {
			out = append(out, w)
		}
	}
	return out
}

// only keeps the entries of namespace ns.
func only(entries []string, namespaces ...string) []string {
	var out []string
	for _, e := range entries {
		for _, ns := range namespaces {
			if strings.Contains(e, " "+ns+"/") {
				out = append(out, e)
			}
		}
	}
	return out
}
