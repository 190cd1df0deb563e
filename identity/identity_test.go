package identity

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/metadata"
)

func TestParseSPIFFE(t *testing.T) {
	id, err := ParseSPIFFE("spiffe://cluster.local/ns/shop/sa/web")
	if err != nil || id.Namespace != "shop" || id.ServiceAccount != "web" || id.TrustDomain != "cluster.local" {
		t.Fatalf("got %+v, %v", id, err)
	}
	for _, bad := range []string{"", "https://cluster.local/ns/a/sa/b", "spiffe:///ns/a/sa/b", "spiffe://td/ns/a", "spiffe://td/ns//sa/b",
		"spiffe://td/ns/a/sa/b/extra", "spiffe://td/sa/b/ns/a", "spiffe://td/ns/a/sa/", "spiffe://td/" + strings.Repeat("x/", 5000)} {
		if _, err := ParseSPIFFE(bad); err == nil {
			t.Errorf("ParseSPIFFE(%.64q) accepted", bad)
		}
	}
}

func TestAllowList(t *testing.T) {
	l, err := ParseAllowList("istio-system/istiod, istio-system/istiod-*, spiffe://prod.example/ns/ops/sa/admin,tools/*")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		id   Identity
		want bool
	}{
		{Identity{TrustDomain: "cluster.local", Namespace: "istio-system", ServiceAccount: "istiod"}, true},
		{Identity{TrustDomain: "cluster.local", Namespace: "istio-system", ServiceAccount: "istiod-canary"}, true},
		{Identity{TrustDomain: "cluster.local", Namespace: "istio-system", ServiceAccount: "ingress"}, false},
		{Identity{TrustDomain: "prod.example", Namespace: "ops", ServiceAccount: "admin"}, true},
		{Identity{TrustDomain: "other", Namespace: "ops", ServiceAccount: "admin"}, false},
		{Identity{TrustDomain: "x", Namespace: "tools", ServiceAccount: "anything"}, true},
		{Identity{TrustDomain: "x", Namespace: "tools-2", ServiceAccount: "a"}, false},
	} {
		if got := l.Allows(c.id); got != c.want {
			t.Errorf("Allows(%s) = %v, want %v", c.id.SPIFFE(), got, c.want)
		}
	}
	for _, bad := range []string{"istiod", "/sa", "ns/", "a/b/c", "spiffe://td/x"} {
		if _, err := ParseAllowList(bad); err == nil {
			t.Errorf("ParseAllowList(%q) accepted", bad)
		}
	}
}

func TestBearerIsBounded(t *testing.T) {
	a := &Authenticator{}
	for name, md := range map[string]metadata.MD{
		"none":      {},
		"two":       {"authorization": {"Bearer a", "Bearer b"}},
		"basic":     {"authorization": {"Basic dXNlcg=="}},
		"empty":     {"authorization": {"Bearer "}},
		"oversized": {"authorization": {"Bearer " + strings.Repeat("a", MaxTokenBytes)}},
	} {
		_, err := a.Authenticate(metadata.NewIncomingContext(context.Background(), md))
		r, ok := err.(*Refusal)
		if !ok || r.Reason == "" {
			t.Errorf("%s: got %v, want a refusal with a reason", name, err)
		}
	}
}

func FuzzParseSPIFFE(f *testing.F) {
	f.Add("spiffe://cluster.local/ns/a/sa/b")
	f.Add("spiffe://td/ns/%2F/sa/b?x#y")
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseSPIFFE(s)
		if err != nil {
			return
		}
		if id.Namespace == "" || id.ServiceAccount == "" || strings.Contains(id.Namespace, "/") || strings.Contains(id.ServiceAccount, "/") {
			t.Fatalf("ParseSPIFFE(%q) = %+v", s, id)
		}
	})
}
