// Package golden runs golden-file tests: each testdata/in/<case> directory
// is rendered and compared with testdata/out/<case><ext>, reviewed like
// code; `go test -update` rewrites the outputs from the current code.
// Only tests import it.
package golden

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/out from the current output")

// Cases renders every testdata/in/<case> of the calling package's
// directory with render and compares the result with testdata/out/<case>
// + ext.
func Cases(t *testing.T, ext string, render func(t *testing.T, dir string) []byte) {
	t.Helper()
	cases, err := os.ReadDir("testdata/in")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		t.Run(c.Name(), func(t *testing.T) {
			got := render(t, filepath.Join("testdata/in", c.Name()))
			path := filepath.Join("testdata/out", c.Name()+ext)
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update in this package to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("output differs from %s; run go test -update in this package and review the diff:\n%s", path, got)
			}
		})
	}
}
