package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/xdshard/xdshard/internal/testpki"
)

// TestAdminCLIOverTLS: the operations commands reach a replica whose
// admin address serves TLS, with a client certificate of the mesh's CA,
// check the replica's certificate (chain and SPIFFE identity), and say
// what to pass when they cannot.
func TestAdminCLIOverTLS(t *testing.T) {
	ca := testpki.NewCA(t, "mesh root")
	cert, key, caFile := ca.WriteServer(t, t.TempDir(), testpki.Spec{SPIFFE: "spiffe://cluster.local/ns/istio-system/sa/xdshard"})
	r := serveDemo(t, "--tls-cert", cert, "--tls-key", key, "--client-ca", caFile)

	clientDir := t.TempDir()
	ccert, ckey, _ := ca.WriteServer(t, clientDir, testpki.Spec{SPIFFE: "spiffe://cluster.local/ns/istio-system/sa/operator"})
	tlsArgs := []string{"--admin-addr", r.AdminAddr(), "--tls-cert", ccert, "--tls-key", ckey, "--ca", caFile}

	out := captureStdout(t, func() error { return run(append([]string{"tenants"}, tlsArgs...)) })
	if !strings.Contains(out, "acme") || !strings.Contains(out, "TENANT") {
		t.Errorf("tenants over TLS:\n%s", out)
	}
	out = captureStdout(t, func() error { return run(append([]string{"history", "--tenant", "acme", "-o", "yaml"}, tlsArgs...)) })
	if !strings.Contains(out, "tenant: acme") || !strings.Contains(out, "serving: true") {
		t.Errorf("history -o yaml over TLS:\n%s", out)
	}
	// A write call from loopback over TLS (loopback callers may write).
	v := r.Store().Current("acme").Version
	if err := run(append([]string{"rollback", "--tenant", "acme", "--to", v}, tlsArgs...)); err != nil {
		t.Errorf("rollback over TLS: %v", err)
	}
	if pinned, _ := r.Store().Pinned("acme"); !pinned {
		t.Error("rollback over TLS did not pin")
	}

	for name, c := range map[string]struct {
		args []string
		want string
	}{
		"plaintext to a TLS address": {[]string{"tenants", "--admin-addr", r.AdminAddr(), "--timeout", "2s"}, "pass --tls-cert, --tls-key and --ca"},
		"half of the TLS flags":      {[]string{"tenants", "--admin-addr", r.AdminAddr(), "--tls-cert", ccert}, "needs all of --tls-cert, --tls-key and --ca"},
		"a replica of another CA": {append([]string{"tenants", "--timeout", "2s"}, replaceArg(tlsArgs, "--ca", writeCA(t, testpki.NewCA(t, "another root")))...),
			"not signed by the client CA"},
		"a replica of another identity": {append([]string{"tenants", "--timeout", "2s", "--replica-identity", "xdshard/xdshard"}, tlsArgs...),
			"is not an xdshard replica"},
		"a bad identity pattern": {append([]string{"tenants", "--replica-identity", "xdshard"}, tlsArgs...), "--replica-identity"},
		"a missing key file":     {append([]string{"tenants"}, replaceArg(tlsArgs, "--tls-key", filepath.Join(clientDir, "nope.pem"))...), "nope.pem"},
	} {
		if err := run(c.args); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error mentioning %q", name, err, c.want)
		}
	}
}

func replaceArg(args []string, flag, value string) []string {
	out := append([]string(nil), args...)
	for i := range out {
		if out[i] == flag && i+1 < len(out) {
			out[i+1] = value
		}
	}
	return out
}

func writeCA(t *testing.T, ca *testpki.CA) string {
	p := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(p, ca.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
