package translate

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/xdshard/xdshard/snapshot"
	"github.com/xdshard/xdshard/snapshot/model"
)

// TestRolloutPolicy reads a tenant's own rollout setting from its
// Namespaces' annotations: each value that does not parse is ignored
// with a warning on its Namespace, and namespaces that disagree are
// settled the careful way.
func TestRolloutPolicy(t *testing.T) {
	ns := func(name string, a map[string]string) *model.Object {
		return &model.Object{Key: model.Key{Kind: model.KindNamespace, Name: name}, Meta: metav1.ObjectMeta{Name: name, Annotations: a}}
	}
	const R, P, S = model.RolloutAnnotation, model.RolloutPercentAnnotation, model.RolloutSelectorAnnotation
	for _, c := range []struct {
		name  string
		nss   []*model.Object
		want  snapshot.RolloutPolicy
		warns []string // one per warning, in order
	}{
		{"none", []*model.Object{ns("a", nil)}, snapshot.RolloutPolicy{}, nil},
		{"canary by percent", []*model.Object{ns("a", map[string]string{R: "canary", P: "25"})}, snapshot.RolloutPolicy{Mode: snapshot.RolloutCanary, Percent: 25}, nil},
		{"off", []*model.Object{ns("a", map[string]string{R: "off"})}, snapshot.RolloutPolicy{Mode: snapshot.RolloutOff}, nil},
		{"canaries only, the replica's switch", []*model.Object{ns("a", map[string]string{S: "track=canary"})}, snapshot.RolloutPolicy{Selector: "track=canary"}, nil},
		{"a bad mode", []*model.Object{ns("a", map[string]string{R: "yes"})}, snapshot.RolloutPolicy{}, []string{`want "canary" or "off"`}},
		{"a bad percent", []*model.Object{ns("a", map[string]string{R: "canary", P: "120"})}, snapshot.RolloutPolicy{Mode: snapshot.RolloutCanary}, []string{"from 1 to 100"}},
		{"a percent that is no number", []*model.Object{ns("a", map[string]string{P: "ten"})}, snapshot.RolloutPolicy{}, []string{"from 1 to 100"}},
		{"a bad selector", []*model.Object{ns("a", map[string]string{S: "track in canary"})}, snapshot.RolloutPolicy{}, []string{"label selector"}},
		{"a huge selector", []*model.Object{ns("a", map[string]string{S: strings.Repeat("a", 2000) + "=b"})}, snapshot.RolloutPolicy{}, []string{"at most 1024"}},
		{"a selector and a percent", []*model.Object{ns("a", map[string]string{P: "5", S: "track=canary"})}, snapshot.RolloutPolicy{Selector: "track=canary"}, []string{"percent is ignored"}},
		{"canary wins over off", []*model.Object{ns("a", map[string]string{R: "off"}), ns("b", map[string]string{R: "canary"})}, snapshot.RolloutPolicy{Mode: snapshot.RolloutCanary}, []string{"disagrees with namespace a"}},
		{"the first namespace's canaries", []*model.Object{ns("a", map[string]string{P: "5"}), ns("b", map[string]string{P: "50"})}, snapshot.RolloutPolicy{Percent: 5}, []string{"differ from namespace a"}},
		{"the same canaries twice", []*model.Object{ns("a", map[string]string{P: "5"}), ns("b", map[string]string{P: "5"})}, snapshot.RolloutPolicy{Percent: 5}, nil},
	} {
		got, diags := rolloutPolicy(&model.TenantView{Tenant: "t", NamespaceObjects: c.nss})
		if got != c.want {
			t.Errorf("%s: %+v, want %+v", c.name, got, c.want)
		}
		if len(diags) != len(c.warns) {
			t.Errorf("%s: diagnostics %v, want %d", c.name, diags, len(c.warns))
			continue
		}
		for i, d := range diags {
			if d.Severity != snapshot.SeverityWarning || !strings.Contains(d.Message, c.warns[i]) || d.Namespace == "" || !strings.HasPrefix(d.Object, "Namespace") {
				t.Errorf("%s: diagnostic %+v, want a warning on a Namespace mentioning %q", c.name, d, c.warns[i])
			}
		}
	}
}
