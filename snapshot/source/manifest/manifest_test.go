package manifest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/xdshard/xdshard/internal/golden"
	"github.com/xdshard/xdshard/snapshot/model"
)

// TestGolden decodes each testdata/in/<case> directory and compares the
// objects read and the diagnostics with testdata/out/<case>.txt.
func TestGolden(t *testing.T) {
	golden.Cases(t, ".txt", func(t *testing.T, dir string) []byte {
		r, err := Load(dir)
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		b.WriteString("objects:\n")
		for _, o := range r.Objects {
			fmt.Fprintf(&b, "  %s (%s)\n", o.Ref(), o.Origin)
		}
		b.WriteString("diagnostics:\n")
		for _, d := range r.Diags() {
			fmt.Fprintf(&b, "  %s\n", d.Error())
		}
		return []byte(b.String())
	})
}

func TestMissingDir(t *testing.T) {
	if _, err := Load(filepath.Join(t.TempDir(), "nope")); err == nil || !strings.Contains(err.Error(), "--config") {
		t.Fatalf("missing dir: %v, want an error that says how to fix it", err)
	}
}

func FuzzDecode(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/in/*/*.yaml")
	for _, s := range seeds {
		if b, err := os.ReadFile(s); err == nil {
			f.Add(b)
		}
	}
	demo, _ := filepath.Glob("../demo/mesh/*.yaml")
	for _, s := range demo {
		if b, err := os.ReadFile(s); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("---\n---\n"))
	f.Add([]byte("apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: b}\nspec: {ports: [{port: &x 1, name: *x}]}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, d := range Decode("fuzz.yaml", data) {
			if d.Object == nil && d.Diag == nil {
				t.Fatal("a document produced neither an object nor a diagnostic")
			}
			if d.Diag != nil && d.Diag.Message == "" {
				t.Fatal("diagnostic without a message")
			}
		}
	})
}

// TestEncodeRoundTrip writes the demo mesh and reads it back unchanged.
func TestEncodeRoundTrip(t *testing.T) {
	r, err := Load("../demo/mesh")
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := Encode(&b, r.Objects); err != nil {
		t.Fatal(err)
	}
	back := Decode("roundtrip.yaml", []byte(b.String()))
	if len(back) != len(r.Objects) {
		t.Fatalf("read back %d documents, wrote %d", len(back), len(r.Objects))
	}
	for i, d := range back {
		if d.Diag != nil {
			t.Fatalf("document %d: %v", i, d.Diag.Error())
		}
		if d.Object.Key != r.Objects[i].Key || !sameSpec(d.Object, r.Objects[i]) {
			t.Fatalf("document %d: %s does not round-trip", i, d.Object.Ref())
		}
	}
}

func sameSpec(a, b *model.Object) bool {
	var x, y strings.Builder
	_ = Encode(&x, []*model.Object{a})
	_ = Encode(&y, []*model.Object{b})
	return x.String() == y.String()
}
