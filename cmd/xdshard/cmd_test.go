package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"

	"github.com/spf13/cobra"

	"github.com/xdshard/xdshard/bench/proxy"
	"github.com/xdshard/xdshard/server"
	"github.com/xdshard/xdshard/snapshot/source/demo"
	"github.com/xdshard/xdshard/snapshot/translate"
	"github.com/xdshard/xdshard/snapshot/translate/xds"
)

func TestServeFlagsRejectBadInput(t *testing.T) {
	cases := map[string]struct {
		args []string
		want string
	}{
		"plaintext beyond loopback":   {[]string{"--xds-addr", "0.0.0.0:15010"}, "--insecure"},
		"address without port":        {[]string{"--admin-addr", "localhost"}, "HOST:PORT"},
		"missing config dir":          {[]string{"--config", "/nonexistent/mesh"}, "not a readable directory"},
		"debounce above max delay":    {[]string{"--debounce", "2s", "--max-delay", "1s"}, "debounce <= max-delay"},
		"stray argument":              {[]string{"extra"}, "takes no arguments"},
		"half of TLS":                 {[]string{"--tls-cert", "c.pem"}, "TLS needs all of"},
		"TLS and --insecure":          {[]string{"--tls-cert", "c", "--tls-key", "k", "--client-ca", "ca", "--insecure"}, "--insecure and TLS both"},
		"bad allow-list entry":        {[]string{"--peer-identities", "istiod"}, "want namespace/service-account"},
		"bad SPIFFE allow entry":      {[]string{"--peer-identities", "spiffe://td/xdshard"}, "Istio's shape"},
		"bad rollout mode":            {[]string{"--rollout", "yes"}, "want canary or off"},
		"rollout off with a percent":  {[]string{"--rollout", "off", "--rollout-percent", "5"}, "drop those"},
		"bad canary selector":         {[]string{"--rollout-selector", "track in canary"}, "label selector"},
		"selector and percent":        {[]string{"--rollout-selector", "track=canary", "--rollout-percent", "5"}, "pick one"},
		"NACK ratio of 1":             {[]string{"--rollout-max-nack-ratio", "1"}, "less than 1"},
		"percent above 100":           {[]string{"--rollout-percent", "101"}, "from 0 to 100"},
		"state dir without files":     {[]string{"--state-dir", "/tmp/x"}, "without --config"},
		"affinity without Leases":     {[]string{"--stream-affinity"}, "without --lease-namespace"},
		"state namespace, no cluster": {[]string{"--state-namespace", "xdshard"}, "needs Kubernetes"},
	}
	for name, c := range cases {
		if _, err := serveFlags(c.args); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error mentioning %q", name, err, c.want)
		}
	}
	if cfg, err := serveFlags([]string{"--rollout", "canary"}); err != nil || cfg.rollout.Percent != 10 {
		t.Errorf("--rollout canary: %+v, %v; want 10%% canaries", cfg, err)
	}
	if _, err := serveFlags([]string{"--xds-addr", "0.0.0.0:0", "--insecure"}); err != nil {
		t.Errorf("--insecure should allow any address: %v", err)
	}
	if _, err := serveFlags([]string{"--xds-addr", "0.0.0.0:0", "--admin-addr", "0.0.0.0:0", "--tls-cert", "c", "--tls-key", "k", "--client-ca", "ca"}); err != nil {
		t.Errorf("TLS should allow any address: %v", err)
	}
}

// TestRenderDemo renders every tenant of the embedded demo, as
// `xdshard render --tenant T` does, and checks the JSON's shape.
func TestRenderDemo(t *testing.T) {
	mesh, res, err := (&input{}).load()
	if err != nil {
		t.Fatal(err)
	}
	if d := res.Diags(); len(d) > 0 {
		t.Fatalf("demo diagnostics: %v", d)
	}
	for _, tenant := range mesh.Tenants() {
		snap, err := translate.Compose(mesh.View(tenant))
		if err != nil {
			t.Fatal(err)
		}
		out, err := xds.RenderJSON(snap)
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			Tenant string                       `json:"tenant"`
			Envoy  map[string][]json.RawMessage `json:"envoy"`
			GRPC   map[string][]json.RawMessage `json:"grpc"`
		}
		if err := json.Unmarshal(out, &doc); err != nil {
			t.Fatalf("%s: render is not JSON: %v", tenant, err)
		}
		if doc.Tenant != tenant || len(doc.Envoy["clusters"]) == 0 || len(doc.Envoy["listeners"]) == 0 || len(doc.GRPC["listeners"]) == 0 {
			t.Errorf("%s: rendered %d clusters, %d listeners, %d gRPC listeners", tenant, len(doc.Envoy["clusters"]), len(doc.Envoy["listeners"]), len(doc.GRPC["listeners"]))
		}
	}
	if err := run([]string{"render", "--tenant", "nope"}); err == nil || !strings.Contains(err.Error(), "tenants are") {
		t.Errorf("unknown tenant: %v, want the list of tenants", err)
	}
}

// TestAdminEndpoints reads the admin endpoints of a running serve.
func TestAdminEndpoints(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := serveDemo(t)
	for path, want := range map[string]string{
		"/healthz": "ok", "/readyz": "ready", "/debug/tenantz": `"tenant": "acme"`, "/debug/syncz": "[", "/metrics": "go_goroutines",
	} {
		resp, err := http.Get("http://" + r.AdminAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Errorf("%s: %d %q, want 200 containing %q", path, resp.StatusCode, body, want)
		}
	}
	// The history commands against it: a tenant with one version has
	// nothing to roll back to, and says what it keeps.
	admin := []string{"--admin-addr", r.AdminAddr(), "--tenant", "acme"}
	if err := run(append([]string{"history"}, admin...)); err != nil {
		t.Errorf("history: %v", err)
	}
	if err := run(append([]string{"rollback"}, admin...)); err == nil || !strings.Contains(err.Error(), "no version before") {
		t.Errorf("rollback with one version kept: %v, want a refusal saying so", err)
	}
	if err := run(append([]string{"rollback"}, append(admin, "--to", r.Store().Current("acme").Version)...)); err != nil {
		t.Errorf("rollback to the version served (a pin): %v", err)
	}
	if pinned, _ := r.Store().Pinned("acme"); !pinned {
		t.Error("rollback did not pin")
	}
	if err := run(append([]string{"unpin"}, admin...)); err != nil {
		t.Errorf("unpin: %v", err)
	}
	if err := run(append([]string{"rollout", "status"}, admin...)); err != nil {
		t.Errorf("rollout status: %v", err)
	}
	if err := run(append([]string{"rollout", "promote"}, admin...)); err == nil || !strings.Contains(err.Error(), "no version in rollout") {
		t.Errorf("rollout promote with nothing in rollout: %v", err)
	}
	if err := run(append([]string{"rollout", "restart"}, admin...)); err == nil {
		t.Error("rollout restart was accepted")
	}
	// proxy-status and config-dump of a connected proxy.
	conn, err := grpc.NewClient(r.XDSAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	p := proxy.New("acme-web", "web-1", false)
	go func() { _ = p.Run(ctx, conn) }()
	select {
	case <-p.Synced():
	case <-time.After(20 * time.Second):
		t.Fatal("the proxy of acme-web never synced")
	}
	if out := captureStdout(t, func() error { return run([]string{"proxy-status", "--admin-addr", r.AdminAddr()}) }); !strings.Contains(out, "web-1.acme-web") || !strings.Contains(out, "SYNCED") {
		t.Errorf("proxy-status:\n%s", out)
	}
	if out := captureStdout(t, func() error { return run([]string{"proxy-status", "--admin-addr", r.AdminAddr(), "web-1.acme-web"}) }); !strings.Contains(out, "CDS") || !strings.Contains(out, "tenant acme") {
		t.Errorf("proxy-status web-1.shop:\n%s", out)
	}
	if out := captureStdout(t, func() error {
		return run([]string{"config-dump", "web-1.acme-web", "--admin-addr", r.AdminAddr(), "--type", "cds"})
	}); !strings.Contains(out, "ClustersConfigDump") || strings.Contains(out, "ListenersConfigDump") {
		t.Errorf("config-dump --type cds:\n%.500s", out)
	}
	var ee *exitError
	if err := run([]string{"dns", "nosuch", "--namespace", "acme-web", "--admin-addr", r.AdminAddr()}); !errors.As(err, &ee) || ee.code != exitFindings {
		t.Errorf("dns of a name nobody serves: %v, want exit code %d", err, exitFindings)
	}
	if err := run([]string{"dns", "nosuch", "--admin-addr", r.AdminAddr()}); err == nil || !strings.Contains(err.Error(), "--proxy") {
		t.Errorf("dns without --proxy or --namespace: %v", err)
	}
	if err := run([]string{"config-dump", "nobody.nowhere", "--admin-addr", r.AdminAddr()}); err == nil || !strings.Contains(err.Error(), "not connected") {
		t.Errorf("config-dump of a proxy not connected: %v", err)
	}
	if err := run([]string{"history", "--admin-addr", r.AdminAddr()}); err == nil || !strings.Contains(err.Error(), `"tenant" not set`) {
		t.Errorf("history without --tenant: %v", err)
	}
}

// TestExitCodes: check, render and analyze say by their exit code whether
// the config has errors, so a pipeline can stop a change before it lands.
func TestExitCodes(t *testing.T) {
	clean := t.TempDir()
	if err := demo.WriteTo(clean); err != nil {
		t.Fatal(err)
	}
	bad := t.TempDir()
	if err := demo.WriteTo(bad); err != nil {
		t.Fatal(err)
	}
	poison := "apiVersion: v1\nkind: Service\nmetadata: {name: huge, namespace: acme-web}\nspec:\n  clusterIP: 10.96.9.9\n  ports: [{name: http, port: 70000}]\n"
	if err := os.WriteFile(filepath.Join(bad, "90-poison.yaml"), []byte(poison), 0o644); err != nil {
		t.Fatal(err)
	}
	code := func(args ...string) int {
		err := run(args)
		var ee *exitError
		switch {
		case err == nil:
			return exitOK
		case errors.As(err, &ee):
			return ee.code
		default:
			return exitFailed
		}
	}
	for _, c := range []struct {
		args []string
		want int
	}{
		{[]string{"check", "--config", clean}, exitOK},
		{[]string{"check", "--config", bad}, exitConfigError},
		{[]string{"render", "--config", bad}, exitConfigError},
		{[]string{"render", "--config", bad, "--tenant", "globex"}, exitConfigError},
		{[]string{"analyze", "--config", bad}, exitConfigError},
		{[]string{"check", "--config", filepath.Join(bad, "nope")}, exitFailed},
	} {
		if got := code(c.args...); got != c.want {
			t.Errorf("xdshard %v exited %d, want %d", c.args, got, c.want)
		}
	}
}

// TestDeployManifestArgsParse: the Deployment in deploy/ starts serve
// with arguments serve accepts in a Pod (the downward-API variables
// substituted as the kubelet does).
func TestDeployManifestArgsParse(t *testing.T) {
	raw, err := os.ReadFile("../../deploy/xdshard.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var args []string
	for _, doc := range strings.Split(string(raw), "\n---") {
		var d appsv1.Deployment
		if err := yaml.Unmarshal([]byte(doc), &d); err != nil {
			t.Fatalf("deploy/xdshard.yaml: %v", err)
		}
		if d.Kind == "Deployment" {
			args = d.Spec.Template.Spec.Containers[0].Args
		}
	}
	cfg := podServeFlags(t, args)
	if !cfg.inCluster || cfg.leaseNamespace != "istio-system" || cfg.replicaID != "xdshard-7d9f-abcde" || cfg.peerAddr != "10.0.3.7:15012" {
		t.Fatalf("the Deployment's args give %+v, want in-cluster, Leases in istio-system, the pod's name and IP", cfg)
	}
}

// podServeFlags parses a Deployment's container args as serve does in
// its Pod: the downward API's $(POD_NAME) and $(POD_IP) substituted as
// the kubelet does, KUBERNETES_SERVICE_HOST set.
func podServeFlags(t *testing.T, args []string) *serveConfig {
	t.Helper()
	if len(args) < 2 || args[0] != "serve" {
		t.Fatalf("the Deployment's args %q do not run serve", args)
	}
	t.Setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
	args = slices.Clone(args)
	for i, a := range args {
		a = strings.ReplaceAll(a, "$(POD_NAME)", "xdshard-7d9f-abcde")
		args[i] = strings.ReplaceAll(a, "$(POD_IP)", "10.0.3.7")
	}
	cfg, err := serveFlags(args[1:])
	if err != nil {
		t.Fatalf("serve refuses the Deployment's args %q: %v", args, err)
	}
	return cfg
}

// serveDemo runs serve on the demo mesh's files, on loopback ports, with
// args added to its command line, until the test ends.
func serveDemo(t *testing.T, args ...string) *server.Replica {
	t.Helper()
	r, _ := serveDemoDir(t, args...)
	return r
}

// serveDemoDir is serveDemo, and the directory it serves.
func serveDemoDir(t *testing.T, args ...string) (*server.Replica, string) {
	t.Helper()
	dir := t.TempDir()
	if err := demo.WriteTo(dir); err != nil {
		t.Fatal(err)
	}
	cfg, err := serveFlags(append([]string{"--config", dir, "--xds-addr", "127.0.0.1:0", "--mcp-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"}, args...))
	if err != nil {
		t.Fatal(err)
	}
	r, err := startServing(t.Context(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	<-r.Synced()
	return r, dir
}

// captureStdout runs f and returns what it printed; f's error fails t.
func captureStdout(t *testing.T, f func() error) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stdout
	os.Stdout = w
	done := make(chan string)
	go func() { b, _ := io.ReadAll(r); done <- string(b) }()
	ferr := f()
	os.Stdout = old
	w.Close()
	out := <-done
	if ferr != nil {
		t.Fatalf("%v\n%s", ferr, out)
	}
	return out
}

// TestCLIConventions: every command a user can run has a one-line
// description and examples, prints its help on standard output with exit
// 0, and the commands that print tables take -o json and yaml.
func TestCLIConventions(t *testing.T) {
	root := newRootCmd()
	tabular := map[string]bool{"proxy-status": true, "tenants": true, "history": true, "status": true, "dns": true, "members": true}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			if sub.Hidden || sub.Name() == "help" || sub.Name() == "completion" || sub.Parent().Name() == "completion" {
				continue
			}
			if sub.Short == "" || strings.Contains(strings.TrimSuffix(sub.Short, "."), "\n") {
				t.Errorf("%s: no one-line description", sub.CommandPath())
			}
			if sub.Example == "" && sub.Name() != "version" {
				t.Errorf("%s: no examples", sub.CommandPath())
			}
			if o := sub.Flags().Lookup("output"); tabular[sub.Name()] && (o == nil || !strings.Contains(o.Usage, "json") || !strings.Contains(o.Usage, "yaml")) {
				t.Errorf("%s prints a table but takes no -o json|yaml", sub.CommandPath())
			}
			walk(sub)
		}
	}
	walk(root)
	for _, args := range [][]string{{"--help"}, {"serve", "--help"}, {"rollout", "status", "--help"}, {"help", "history"}} {
		out := captureStdout(t, func() error { return run(args) })
		if !strings.Contains(out, "Usage:") || !strings.Contains(out, "Flags:") {
			t.Errorf("xdshard %v printed on standard output:\n%.300s", args, out)
		}
	}
	if out := captureStdout(t, func() error { return run([]string{"completion", "bash"}) }); !strings.Contains(out, "__xdshard") {
		t.Errorf("completion bash:\n%.300s", out)
	}
}
