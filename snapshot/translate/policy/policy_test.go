package policy

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	security "istio.io/api/security/v1beta1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/xdshard/xdshard/internal/golden"
	"github.com/xdshard/xdshard/snapshot/model"
	"github.com/xdshard/xdshard/snapshot/source/manifest"
)

func meshOf(objs []*model.Object) *model.Mesh {
	m := model.NewMesh()
	m.Apply(model.Adds(objs))
	return m
}

// TestGolden generates every tenant's policies for testdata/in/<case> and
// compares the YAML (as `kubectl apply` would take it) and the conflicts
// with testdata/out/<case>.yaml.
func TestGolden(t *testing.T) {
	golden.Cases(t, ".yaml", func(t *testing.T, dir string) []byte {
		r, err := manifest.Load(dir)
		if err != nil || len(r.Diags()) > 0 {
			t.Fatalf("input: %v %v", err, r.Diags())
		}
		m := meshOf(r.Objects)
		var out bytes.Buffer
		for _, tenant := range m.Tenants() {
			objs, diags := Generate(m.View(tenant), Options{})
			fmt.Fprintf(&out, "# tenant %s: %d objects\n", tenant, len(objs))
			for _, d := range diags {
				fmt.Fprintf(&out, "# %s\n", d.Error())
			}
			if err := manifest.Encode(&out, objs); err != nil {
				t.Fatal(err)
			}
		}
		return out.Bytes()
	})
}

// TestGeneratedPoliciesDecode: what render --kind prints for kubectl
// apply is read back by xdshard's own strict decoder.
func TestGeneratedPoliciesDecode(t *testing.T) {
	r, _ := manifest.Load("testdata/in/three-tenants")
	objs, _ := Generate(meshOf(r.Objects).View("acme"), Options{})
	var b bytes.Buffer
	if err := manifest.Encode(&b, objs); err != nil {
		t.Fatal(err)
	}
	for _, d := range manifest.Decode("gen.yaml", b.Bytes()) {
		if d.Diag != nil {
			t.Fatalf("generated YAML does not decode: %v", d.Diag.Error())
		}
	}
}

// TestIsolationProperty: over random meshes, no tenant's generated
// AuthorizationPolicy allows a principal of a tenant it does not trust.
func TestIsolationProperty(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	for iter := 0; iter < 200; iter++ {
		tenants := 2 + rng.IntN(6)
		var objs []*model.Object
		trusts := map[string][]string{}
		nsOf := map[string]string{}
		for i := 0; i < tenants; i++ {
			tenant := fmt.Sprintf("t%d", i)
			var trusted []string
			for j := 0; j < tenants; j++ {
				if j != i && rng.IntN(4) == 0 {
					trusted = append(trusted, fmt.Sprintf("t%d", j))
				}
			}
			trusts[tenant] = trusted
			for k := 0; k <= rng.IntN(3); k++ {
				ns := fmt.Sprintf("%s-ns%d", tenant, k)
				nsOf[ns] = tenant
				meta := metav1.ObjectMeta{Name: ns, Labels: map[string]string{model.TenantLabel: tenant}}
				if k == 0 && len(trusted) > 0 {
					meta.Annotations = map[string]string{model.TrustAnnotation: strings.Join(trusted, ",")}
				}
				objs = append(objs, &model.Object{Key: model.Key{Kind: model.KindNamespace, Name: ns}, Meta: meta, Body: &corev1.Namespace{ObjectMeta: meta}})
			}
		}
		m := meshOf(objs)
		for _, tenant := range m.Tenants() {
			gen, _ := Generate(m.View(tenant), Options{})
			checked := 0
			for _, o := range gen {
				ap, ok := o.Body.(*security.AuthorizationPolicy)
				if !ok {
					continue
				}
				checked++
				for _, r := range ap.Rules {
					for _, f := range r.From {
						if len(f.Source.Principals) == 0 || len(f.Source.NotPrincipals)+len(f.Source.Namespaces)+len(f.Source.IpBlocks) > 0 {
							t.Fatalf("%s: a rule that is not a plain principal allow-list: %v", tenant, f.Source)
						}
						for _, p := range f.Source.Principals {
							ns := strings.Split(p, "/")[2]
							owner := nsOf[ns]
							if ns != model.SharedNamespace && owner != tenant && !slices.Contains(trusts[tenant], owner) {
								t.Fatalf("iteration %d: tenant %s allows %s of untrusted tenant %s", iter, tenant, p, owner)
							}
						}
					}
				}
			}
			if checked != len(m.Namespaces(tenant)) {
				t.Fatalf("tenant %s: %d AuthorizationPolicies for %d namespaces", tenant, checked, len(m.Namespaces(tenant)))
			}
		}
	}
}
