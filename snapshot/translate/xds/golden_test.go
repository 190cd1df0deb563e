package xds

import (
	"bytes"
	"testing"

	"github.com/xdshard/xdshard/internal/golden"
	"github.com/xdshard/xdshard/snapshot/source/manifest"
)

// TestGolden renders every tenant of each testdata/in/<case> mesh and
// compares it with testdata/out/<case>.json. Review a regenerated golden
// like code: it is what proxies receive.
func TestGolden(t *testing.T) {
	golden.Cases(t, ".json", func(t *testing.T, dir string) []byte {
		r, err := manifest.Load(dir)
		if err != nil {
			t.Fatal(err)
		}
		if d := r.Diags(); len(d) > 0 {
			t.Fatalf("test input does not decode: %v", d[0].Error())
		}
		m := loadMesh(t, r)
		var out bytes.Buffer
		for _, tenant := range m.Tenants() {
			s, err := Build(m.View(tenant), Options{})
			if err != nil {
				t.Fatalf("%s: %v", tenant, err)
			}
			b, err := RenderJSON(s)
			if err != nil {
				t.Fatal(err)
			}
			out.Write(b)
		}
		return out.Bytes()
	})
}
