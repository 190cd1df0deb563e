package systest

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/xdshard/xdshard/internal/helmtest"
	"github.com/xdshard/xdshard/internal/kubetest"
	"github.com/xdshard/xdshard/internal/proc"
)

// istioBin is the folder of pilot-discovery, pilot-agent and helm
// (scripts/istio-bins.sh).
func istioBin(tb testing.TB) string {
	return helmtest.Programs(tb, "pilot-discovery", "pilot-agent", "helm")
}

// istioModule is the source of istio.io/istio at the version the programs
// are built from: its Helm charts and CRDs.
func istioModule(tb testing.TB) string {
	out, err := exec.Command("../scripts/istio-bins.sh", "--module").Output()
	dir := strings.TrimSpace(string(out))
	if err != nil || dir == "" {
		tb.Fatalf("scripts/istio-bins.sh --module: %v", err)
	}
	return dir
}

// proc is a program the test runs, killed when the test ends; its output
// is kept and shown when the test fails.
type process struct {
	name string
	cmd  *exec.Cmd
	log  *proc.Log
	done chan struct{}
}

// start runs bin with args in dir, with env added to the test's.
func start(t *testing.T, name, dir string, env []string, bin string, args ...string) *process {
	t.Helper()
	p := &process{name: name, log: &proc.Log{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Dir = dir
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // dies with the test binary
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("--- %s's last output:\n%s", name, p.log.Tail(40))
		}
	})
	return p
}

// waitReady polls url (a readiness probe, as kubelet's: 200 is ready; a
// TLS certificate is not verified) until it answers 200, failing the test
// if the program exits first or limit passes.
func (p *process) waitReady(t *testing.T, limit time.Duration, what, url string) {
	t.Helper()
	eventually(t, limit, what, func() error {
		if p.exited() {
			t.Fatalf("%s exited:\n%s", p.name, p.log.Tail(40))
		}
		return probe(url)
	})
}

// probe GETs url once: nil when it answers 200.
func probe(url string) error {
	resp, err := insecureHTTP.Get(url)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return nil
}

// kill ends the program at once (SIGKILL) and waits for it.
func (p *process) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// exited says whether the program has ended.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// helmTemplate renders chart with values (YAML) as release name in
// namespace, and returns its objects.
func helmTemplate(t *testing.T, name, chart, namespace, values string) []*unstructured.Unstructured {
	t.Helper()
	vf := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(vf, []byte(values), 0o644); err != nil {
		t.Fatal(err)
	}
	return helmtest.Objects(t, helmtest.Template(t, name, chart, namespace, "--values", vf))
}

// find returns the rendered object of kind and name.
func find(t *testing.T, objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	t.Fatalf("the chart renders no %s %s", kind, name)
	return nil
}

// container returns the pod template's container name of a Deployment:
// its args and its env, each variable's value resolved as the kubelet
// would from fields (a pod of name pod, namespace ns, service account sa,
// IP ip).
func container(t *testing.T, d *unstructured.Unstructured, name, pod, ns, sa, ip string) (args []string, env []string) {
	t.Helper()
	cs, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
	for _, c := range cs {
		c := c.(map[string]any)
		if c["name"] != name {
			continue
		}
		for _, a := range c["args"].([]any) {
			args = append(args, a.(string))
		}
		vars, _ := c["env"].([]any)
		for _, v := range vars {
			v := v.(map[string]any)
			val, ok := v["value"].(string)
			if from, has := v["valueFrom"].(map[string]any); has {
				field, _, _ := unstructured.NestedString(from, "fieldRef", "fieldPath")
				val, ok = map[string]string{"metadata.name": pod, "metadata.namespace": ns, "spec.serviceAccountName": sa,
					"status.podIP": ip, "status.hostIP": ip}[field]
			}
			if ok {
				env = append(env, v["name"].(string)+"="+val)
			}
		}
		return args, env
	}
	t.Fatalf("%s has no container %s", d.GetName(), name)
	return nil, nil
}

// startCluster runs a real API server with Istio's own CRDs (from
// istio.io/istio's base chart, as `helm install istio-base` installs
// them).
func startCluster(t *testing.T, ctx context.Context, module string) *kubetest.Cluster {
	t.Helper()
	crds, err := kubetest.CRDsFromFile(filepath.Join(module, "manifests", "charts", "base", "files", "crd-all.gen.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := kubetest.StartWithCRDs(ctx, kubetest.Binaries(t), t.TempDir(), crds)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- the API server's last output:\n%s", c.LogTail(20))
		}
		c.Stop()
	})
	return c
}

// service is a Kubernetes Service as kube-proxy makes it: an address whose
// each new connection goes to one live endpoint, picked at random among
// those that accept it.
type service struct {
	lis       net.Listener
	endpoints []string // HOST:PORT

	mu     sync.Mutex
	prefer string              // an endpoint tried first while it accepts, "" for none
	conns  map[net.Conn]string // open connections, to the endpoint each goes to ("" for a client's side)
}

func newService(t *testing.T, addr string, endpoints ...string) *service {
	t.Helper()
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &service{lis: lis, endpoints: endpoints, conns: map[net.Conn]string{}}
	go s.serve()
	t.Cleanup(func() {
		lis.Close()
		s.mu.Lock()
		defer s.mu.Unlock()
		for c := range s.conns {
			c.Close()
		}
	})
	return s
}

func (s *service) serve() {
	for {
		in, err := s.lis.Accept()
		if err != nil {
			return
		}
		go s.forward(in)
	}
}

func (s *service) forward(in net.Conn) {
	var out net.Conn
	var to string
	s.mu.Lock()
	order := []string{s.prefer}
	s.mu.Unlock()
	for _, i := range rand.Perm(len(s.endpoints)) {
		order = append(order, s.endpoints[i])
	}
	for _, ep := range order {
		if ep == "" {
			continue
		}
		c, err := net.DialTimeout("tcp", ep, time.Second)
		if err == nil {
			out, to = c, ep
			break
		}
	}
	if out == nil {
		in.Close()
		return
	}
	s.mu.Lock()
	s.conns[in], s.conns[out] = "", to
	s.mu.Unlock()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) { _, _ = io.Copy(dst, src); done <- struct{}{} }
	go pipe(out, in)
	go pipe(in, out)
	<-done
	in.Close()
	out.Close()
	s.mu.Lock()
	delete(s.conns, in)
	delete(s.conns, out)
	s.mu.Unlock()
}

// serving says whether a connection through the service to endpoint is
// open.
func (s *service) serving(endpoint string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, to := range s.conns {
		if to == endpoint {
			return true
		}
	}
	return false
}

// sendNewTo makes new connections go to endpoint while it accepts them
// (a test's way to pick where a client lands).
func (s *service) sendNewTo(endpoint string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.prefer = endpoint
}

// open counts the connections through the service.
func (s *service) open() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns) / 2
}

// eventually polls ok every 100 ms until it holds, failing the test after
// limit with what.
func eventually(t *testing.T, limit time.Duration, what string, ok func() error) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		err := ok()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, limit, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func writeFiles(t *testing.T, dir string, files map[string][]byte) {
	t.Helper()
	for name, b := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}
