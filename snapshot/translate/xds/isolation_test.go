package xds

import (
	"bytes"
	"strings"
	"testing"

	"github.com/xdshard/xdshard/snapshot"
	"github.com/xdshard/xdshard/snapshot/source/manifest"
)

// TestTenantIsolation builds the sidecar-exportto mesh, where tenants red
// and blue both have a service named reviews, and checks every byte of
// every resource of every view: nothing of blue appears in red's snapshot
// but what blue exported to red, and nothing of red appears in blue's.
func TestTenantIsolation(t *testing.T) {
	r, err := manifest.Load("testdata/in/sidecar-exportto")
	if err != nil {
		t.Fatal(err)
	}
	m := loadMesh(t, r)
	forbidden := map[string][]string{
		"red":  {"reviews.blue", "10.96.4.1", "hidden.blue", "10.96.4.3"},
		"blue": {"red-a", "red-b", "10.96.3.", "shared-api"},
	}
	mustHave := map[string][]string{
		"red":  {"reviews.red-a.svc.cluster.local", "reviews.red-b.svc.cluster.local", "shared-api.blue.svc.cluster.local"},
		"blue": {"reviews.blue.svc.cluster.local"},
	}
	for tenant, bad := range forbidden {
		s, err := Build(m.View(tenant), Options{})
		if err != nil {
			t.Fatal(err)
		}
		var all bytes.Buffer
		for view, sets := range s.Views {
			for _, set := range sets {
				for _, res := range set.Items {
					all.WriteString(res.Name)
					all.Write(res.Body.Value)
					for _, b := range bad {
						if strings.Contains(res.Name, b) || bytes.Contains(res.Body.Value, []byte(b)) {
							t.Errorf("tenant %s, view %s: resource %s contains %q of another tenant", tenant, view, res.Name, b)
						}
					}
				}
			}
		}
		for _, want := range mustHave[tenant] {
			if !bytes.Contains(all.Bytes(), []byte(want)) {
				t.Errorf("tenant %s is missing %s (the test would pass vacuously)", tenant, want)
			}
		}
		if s.Set(snapshot.ViewEnvoy, snapshot.ClusterType).Len() == 0 {
			t.Fatalf("tenant %s has no clusters", tenant)
		}
	}
}

// TestRebuildIsIdentical: the same config yields the same version.
func TestRebuildIsIdentical(t *testing.T) {
	r, err := manifest.Load("testdata/in/virtualservice-routing")
	if err != nil {
		t.Fatal(err)
	}
	a, err := Build(loadMesh(t, r).View("web"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	r2, _ := manifest.Load("testdata/in/virtualservice-routing")
	b, err := Build(loadMesh(t, r2).View("web"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if a.Version != b.Version {
		t.Fatalf("identical config built versions %s and %s", a.Version, b.Version)
	}
}
