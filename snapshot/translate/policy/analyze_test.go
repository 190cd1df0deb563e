package policy

import (
	"strings"
	"testing"

	"github.com/xdshard/xdshard/snapshot/source/manifest"
)

// TestAnalyze: acme-data's user NetworkPolicy only admits acme-web, while
// Istio (generated policy) also allows istio-system and the trusted
// globex; initech's opted-out namespace exports to everyone.
func TestAnalyze(t *testing.T) {
	r, err := manifest.Load("testdata/analyze-in")
	if err != nil || len(r.Diags()) > 0 {
		t.Fatalf("input: %v %v", err, r.Diags())
	}
	var got []string
	for _, f := range Analyze(meshOf(r.Objects)) {
		got = append(got, f.String())
	}
	text := strings.Join(got, "\n")
	for _, want := range []string{
		"namespace acme-data: Istio allows traffic from globex, istio-system that its NetworkPolicies block",
		"Service initech/open: is exported to every namespace",
		"AuthorizationPolicy initech/allow-all: allows requests from anyone",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("missing finding %q in:\n%s", want, text)
		}
	}
	if strings.Contains(text, "namespace globex:") {
		t.Errorf("globex's generated policies agree, yet a disagreement was reported:\n%s", text)
	}
}
