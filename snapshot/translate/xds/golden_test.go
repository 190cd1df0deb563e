package xds

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/xdshard/xdshard/snapshot/source/manifest"
)

var update = flag.Bool("update", false, "rewrite testdata/out from the current output")

// TestGolden renders every tenant of each testdata/in/<case> mesh and
// compares it with testdata/out/<case>.json. Review a regenerated golden
// like code: it is what proxies receive.
func TestGolden(t *testing.T) {
	cases, err := os.ReadDir("testdata/in")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		t.Run(c.Name(), func(t *testing.T) {
			r, err := manifest.Load(filepath.Join("testdata/in", c.Name()))
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
			golden := filepath.Join("testdata/out", c.Name()+".json")
			if *update {
				if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./snapshot/translate -update to create it)", err)
			}
			if !bytes.Equal(out.Bytes(), want) {
				t.Errorf("%s differs from %s; run go test ./snapshot/translate -update and review the diff", c.Name(), golden)
			}
		})
	}
}
