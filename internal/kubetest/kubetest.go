// Package kubetest runs a real kube-apiserver and etcd on loopback for
// tests, built by scripts/kube-bins.sh (XDSHARD_KUBE_BIN names the folder
// of the binaries; scripts/test.sh sets it). Nothing reconciles in such a
// cluster: no controller-manager, scheduler or kubelet, so tests create
// EndpointSlices themselves. Only tests import it.
package kubetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/xdshard/xdshard/internal/proc"
	"go.yaml.in/yaml/v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	memory "k8s.io/client-go/discovery/cached"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
)

// Cluster is a running etcd and kube-apiserver.
type Cluster struct {
	Kubeconfig string // a kubeconfig file for an admin (system:masters)
	Host       string // https://127.0.0.1:PORT
	Token      string

	bin, dir  string
	port      int
	etcdURL   string
	apiserver *exec.Cmd
	etcd      *exec.Cmd
	logs      *proc.Log

	clientsMu sync.Mutex
	dyn       dynamic.Interface
	mapper    *restmapper.DeferredDiscoveryRESTMapper
}

// Binaries returns the folder of kube-apiserver and etcd, or "" when the
// tests that need them are to be skipped. Under CI=true their absence is a
// failure, so a broken install never turns into silently skipped tests.
func Binaries(tb testing.TB) string {
	dir := os.Getenv("XDSHARD_KUBE_BIN")
	if dir == "" {
		if os.Getenv("CI") == "true" {
			tb.Fatal("XDSHARD_KUBE_BIN is not set under CI: scripts/test.sh builds the API server and sets it")
		}
		tb.Skip("no real API server: run scripts/test.sh, or set XDSHARD_KUBE_BIN=$(scripts/kube-bins.sh)")
	}
	for _, b := range []string{"kube-apiserver", "etcd"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			tb.Fatalf("XDSHARD_KUBE_BIN=%s: %v", dir, err)
		}
	}
	return dir
}

// Start runs etcd and an API server in dir (a test's temp folder) and
// waits until the API server is ready and Istio's CRDs (of the istio.io/api
// module the project builds with) are established. Stop it with Stop; its
// processes also die with the test binary.
func Start(ctx context.Context, bin, dir string) (*Cluster, error) {
	crds, err := IstioCRDs()
	if err != nil {
		return nil, err
	}
	return StartWithCRDs(ctx, bin, dir, crds)
}

// StartWithCRDs is Start with these CRDs installed instead of
// istio.io/api's (a real istiod's own, say).
func StartWithCRDs(ctx context.Context, bin, dir string, crds []*unstructured.Unstructured) (*Cluster, error) {
	c := &Cluster{bin: bin, dir: dir, Token: "xdshard-test-admin-token", logs: &proc.Log{}}
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	c.port, c.etcdURL = ports[0], fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	c.Host = fmt.Sprintf("https://127.0.0.1:%d", c.port)
	peer := fmt.Sprintf("http://127.0.0.1:%d", ports[2])
	c.etcd = c.command(filepath.Join(bin, "etcd"),
		"--data-dir", filepath.Join(dir, "etcd"), "--unsafe-no-fsync",
		"--listen-client-urls", c.etcdURL, "--advertise-client-urls", c.etcdURL,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", "default="+peer,
		"--log-level", "error")
	if err := c.etcd.Start(); err != nil {
		return nil, fmt.Errorf("etcd: %w", err)
	}
	if err := c.writeSecrets(); err != nil {
		c.Stop()
		return nil, err
	}
	if err := c.StartAPIServer(ctx); err != nil {
		c.Stop()
		return nil, err
	}
	if err := c.InstallCRDs(ctx, crds, nil); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

func (c *Cluster) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = c.logs, c.logs
	// Die with the test binary, even when it panics.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	return cmd
}

func (c *Cluster) writeSecrets() error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return err
	}
	files := map[string][]byte{
		"sa.key":     pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}),
		"sa.pub":     pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}),
		"tokens.csv": []byte(c.Token + ",admin,admin,system:masters\n"),
		"kubeconfig": []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: test, cluster: {server: %q, insecure-skip-tls-verify: true}}]
users: [{name: admin, user: {token: %q}}]
contexts: [{name: test, context: {cluster: test, user: admin}}]
current-context: test
`, c.Host, c.Token)),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(c.dir, name), data, 0o600); err != nil {
			return err
		}
	}
	c.Kubeconfig = filepath.Join(c.dir, "kubeconfig")
	return nil
}

// StartAPIServer starts (or, after StopAPIServer, restarts) the API server
// on the same port and etcd, and waits until it is ready.
func (c *Cluster) StartAPIServer(ctx context.Context) error {
	c.apiserver = c.command(filepath.Join(c.bin, "kube-apiserver"),
		"--etcd-servers", c.etcdURL,
		"--secure-port", fmt.Sprint(c.port), "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
		"--endpoint-reconciler-type", "none",
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file", filepath.Join(c.dir, "sa.pub"),
		"--service-account-signing-key-file", filepath.Join(c.dir, "sa.key"),
		"--service-cluster-ip-range", "10.96.0.0/16",
		"--token-auth-file", filepath.Join(c.dir, "tokens.csv"),
		"--authorization-mode", "RBAC",
		"--cert-dir", filepath.Join(c.dir, "certs"),
		"--shutdown-watch-termination-grace-period", "2s",
		"--enable-priority-and-fairness=false",
		// No controller creates each namespace's default ServiceAccount here.
		"--disable-admission-plugins", "ServiceAccount",
		"-v", "0")
	if err := c.apiserver.Start(); err != nil {
		return fmt.Errorf("kube-apiserver: %w", err)
	}
	return c.waitReady(ctx)
}

// StopAPIServer stops the API server (etcd keeps the objects).
func (c *Cluster) StopAPIServer() {
	if c.apiserver != nil && c.apiserver.Process != nil {
		_ = c.apiserver.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = c.apiserver.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = c.apiserver.Process.Kill()
			<-done
		}
	}
}

// Stop ends both processes.
func (c *Cluster) Stop() {
	c.StopAPIServer()
	if c.etcd != nil && c.etcd.Process != nil {
		_ = c.etcd.Process.Kill()
		_ = c.etcd.Wait()
	}
}

// Logs is what the processes printed, for a failing test to show.
func (c *Cluster) Logs() string { return c.logs.String() }

// LogTail is the last n lines of the processes' output.
func (c *Cluster) LogTail(n int) string { return c.logs.Tail(n) }

func (c *Cluster) waitReady(ctx context.Context) error {
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	deadline := time.Now().Add(60 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.Host+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+c.Token)
		resp, err := client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("kube-apiserver not ready after 60s: %v\n%s", err, tail(c.logs.String(), 3000))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// REST is an admin client configuration.
func (c *Cluster) REST() *rest.Config {
	return &rest.Config{Host: c.Host, BearerToken: c.Token, TLSClientConfig: rest.TLSClientConfig{Insecure: true}, QPS: 200, Burst: 400}
}

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// IstioCRDs are Istio's CRDs, from the istio.io/api module the project
// builds with.
func IstioCRDs() ([]*unstructured.Unstructured, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "istio.io/api").Output()
	if err != nil {
		return nil, fmt.Errorf("finding istio.io/api: %w", err)
	}
	return CRDsFromFile(filepath.Join(strings.TrimSpace(string(out)), "kubernetes", "customresourcedefinitions.gen.yaml"))
}

// CRDsFromFile reads the CRDs of a multi-document YAML file.
func CRDsFromFile(path string) ([]*unstructured.Unstructured, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var crds []*unstructured.Unstructured
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc map[string]any
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, err
		}
		if doc != nil {
			crds = append(crds, &unstructured.Unstructured{Object: doc})
		}
	}
	return crds, nil
}

// InstallCRDs creates the CRDs for which keep says yes (nil: all) and
// waits until they are established.
func (c *Cluster) InstallCRDs(ctx context.Context, crds []*unstructured.Unstructured, keep func(kind string) bool) error {
	dyn, err := dynamic.NewForConfig(c.REST())
	if err != nil {
		return err
	}
	var names []string
	for _, crd := range crds {
		kind, _, _ := unstructured.NestedString(crd.Object, "spec", "names", "kind")
		if keep != nil && !keep(kind) {
			continue
		}
		if _, err := dyn.Resource(crdGVR).Create(ctx, crd, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("creating CRD %s: %w", crd.GetName(), err)
		}
		names = append(names, crd.GetName())
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, name := range names {
		for {
			u, err := dyn.Resource(crdGVR).Get(ctx, name, metav1.GetOptions{})
			if err == nil && established(u) {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("CRD %s not established within 30s", name)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

func established(u *unstructured.Unstructured) bool {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == "Established" && m["status"] == "True" {
			return true
		}
	}
	return false
}

func freePorts(n int) ([]int, error) {
	var out []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// Apply applies every document of manifests with server-side apply (as
// `kubectl apply --server-side` does), field manager "kubetest".
func (c *Cluster) Apply(ctx context.Context, manifests string) error {
	return c.each(ctx, manifests, func(ri dynamic.ResourceInterface, u *unstructured.Unstructured) error {
		data, err := json.Marshal(u.Object)
		if err != nil {
			return err
		}
		force := true
		_, err = ri.Patch(ctx, u.GetName(), types.ApplyPatchType, data, metav1.PatchOptions{FieldManager: "kubetest", Force: &force})
		return err
	})
}

// Delete deletes every object named in manifests.
func (c *Cluster) Delete(ctx context.Context, manifests string) error {
	return c.each(ctx, manifests, func(ri dynamic.ResourceInterface, u *unstructured.Unstructured) error {
		return ri.Delete(ctx, u.GetName(), metav1.DeleteOptions{})
	})
}

// clients returns the cluster's dynamic client and REST mapper, made once.
func (c *Cluster) clients() (dynamic.Interface, *restmapper.DeferredDiscoveryRESTMapper, error) {
	c.clientsMu.Lock()
	defer c.clientsMu.Unlock()
	if c.dyn == nil {
		dyn, err := dynamic.NewForConfig(c.REST())
		if err != nil {
			return nil, nil, err
		}
		disco, err := discovery.NewDiscoveryClientForConfig(c.REST())
		if err != nil {
			return nil, nil, err
		}
		c.dyn, c.mapper = dyn, restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disco))
	}
	return c.dyn, c.mapper, nil
}

func (c *Cluster) each(ctx context.Context, manifests string, f func(dynamic.ResourceInterface, *unstructured.Unstructured) error) error {
	dyn, mapper, err := c.clients()
	if err != nil {
		return err
	}
	dec := yaml.NewDecoder(strings.NewReader(manifests))
	for {
		var doc map[string]any
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return err
		}
		if doc == nil {
			continue
		}
		u := &unstructured.Unstructured{Object: doc}
		gvk := u.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			mapper.Reset() // a CRD installed since the mapper looked
			if m, err = mapper.RESTMapping(gvk.GroupKind(), gvk.Version); err != nil {
				return fmt.Errorf("%s: %w", gvk, err)
			}
		}
		var ri dynamic.ResourceInterface = dyn.Resource(m.Resource)
		if m.Scope.Name() == "namespace" {
			ri = dyn.Resource(m.Resource).Namespace(u.GetNamespace())
		}
		if err := f(ri, u); err != nil {
			return fmt.Errorf("%s %s/%s: %w", gvk.Kind, u.GetNamespace(), u.GetName(), err)
		}
	}
}

// DeleteCRD deletes a CRD and waits until it is gone.
func (c *Cluster) DeleteCRD(ctx context.Context, name string) error {
	dyn, err := dynamic.NewForConfig(c.REST())
	if err != nil {
		return err
	}
	if err := dyn.Resource(crdGVR).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := dyn.Resource(crdGVR).Get(ctx, name, metav1.GetOptions{}); err != nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("CRD %s still there after 30s", name)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
