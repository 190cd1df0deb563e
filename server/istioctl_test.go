package server_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xdshard/xdshard/bench/fleet"
	"github.com/xdshard/xdshard/bench/proxy"
	"github.com/xdshard/xdshard/server"
	"github.com/xdshard/xdshard/snapshot/source/memory"
)

// TestRealIstioctl runs the real istioctl binary against a replica, as an
// operator does: proxy-status (the table, per-type columns, -n, -o json)
// and x internal-debug. It needs the binary, which scripts/istio-bins.sh
// builds (with istiod, the first time); scripts/test.sh sets
// XDSHARD_ISTIOCTL, and under CI its absence fails. Without it the request
// shapes are still tested (server/xds/debug_test.go), not the program.
func TestRealIstioctl(t *testing.T) {
	bin := os.Getenv("XDSHARD_ISTIOCTL")
	if bin == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("XDSHARD_ISTIOCTL is not set under CI: scripts/test.sh builds istioctl and sets it")
		}
		t.Skip("XDSHARD_ISTIOCTL is not set (scripts/test.sh builds istioctl and sets it)")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	src := memory.New(fleet.Generate(fleet.Spec{Tenants: 2, Services: 2, Endpoints: 1, Seed: 21}))
	r, conn := startPlain(t, server.Config{Source: src, XDSAddr: "127.0.0.1:0", ReplicaID: "r1", Debounce: 10 * time.Millisecond, MaxDelay: 100 * time.Millisecond})
	good := proxy.New(fleet.Tenant(0), "web-1", false)
	bad := proxy.New(fleet.Tenant(1), "api-1", true)
	bad.NACK = true
	for _, p := range []*proxy.Proxy{good, bad} {
		go func() { _ = p.Run(ctx, conn) }()
	}
	synced(t, good.Synced())
	eventually(t, "the rejecting proxy connected", func() bool { return bad.Latest(proxy.EDS).Count > 0 })

	// istioctl needs a kubeconfig even with --xds-address; with
	// --revision default it never calls the (unreachable) API server.
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kc, []byte("apiVersion: v1\nkind: Config\nclusters: [{name: none, cluster: {server: 'https://127.0.0.1:1'}}]\ncontexts: [{name: none, context: {cluster: none, user: none}}]\ncurrent-context: none\nusers: [{name: none, user: {token: none}}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	istioctl := func(args ...string) string {
		t.Helper()
		args = append(append([]string{"--kubeconfig", kc}, args...), "--xds-address", r.XDSAddr(), "--plaintext", "--timeout", "10s", "--revision", "default")
		ctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("istioctl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	goodName, badName := "web-1."+fleet.Tenant(0), "api-1."+fleet.Tenant(1)

	out := istioctl("proxy-status")
	if !strings.Contains(out, goodName) || !strings.Contains(out, badName) || !strings.Contains(out, "xdshard-r1") || strings.Contains(out, "MISSING") {
		t.Fatalf("istioctl proxy-status:\n%s\nwant both proxies by pod.namespace, and xdshard-r1 as their istiod", out)
	}
	eventually(t, "istioctl -v 1 showing SYNCED and ERROR", func() bool {
		out = istioctl("proxy-status", "-v", "1")
		var goodLine, badLine string
		for _, l := range strings.Split(out, "\n") {
			switch {
			case strings.HasPrefix(l, goodName+" "):
				goodLine = l
			case strings.HasPrefix(l, badName+" "):
				badLine = l
			}
		}
		return strings.Count(goodLine, "SYNCED") == 4 && strings.Count(badLine, "ERROR") == 4
	})
	if out := istioctl("proxy-status", "-n", fleet.Tenant(0)); !strings.Contains(out, goodName) || strings.Contains(out, badName) {
		t.Fatalf("istioctl proxy-status -n %s:\n%s", fleet.Tenant(0), out)
	}
	// -o json prints the syncz response: the ClientConfigs, with the
	// rejection's text.
	js := istioctl("proxy-status", "-o", "json")
	var resp struct {
		Resources []json.RawMessage `json:"resources"`
	}
	if err := json.Unmarshal([]byte(js), &resp); err != nil || len(resp.Resources) != 2 || !strings.Contains(js, "simulated rejection") {
		t.Fatalf("istioctl proxy-status -o json: %d ClientConfigs, %v; want the two proxies and the rejection's text:\n%.2000s", len(resp.Resources), err, js)
	}
	var tenantz struct {
		Tenants []struct{ Tenant string } `json:"tenants"`
	}
	if err := json.Unmarshal([]byte(istioctl("x", "internal-debug", "tenantz")), &tenantz); err != nil || len(tenantz.Tenants) != 3 {
		t.Fatalf("istioctl x internal-debug tenantz: %+v, %v; want the three tenants", tenantz, err)
	}
}
