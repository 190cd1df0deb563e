package manifest

import (
	"context"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"slices"

	"github.com/xdshard/xdshard/snapshot"
	"github.com/xdshard/xdshard/snapshot/model"
)

// Result is everything read from a set of manifests.
type Result struct {
	Objects     []*model.Object
	Diagnostics map[string][]snapshot.Diagnostic // by file (or folder); files without problems are absent
}

// Diags returns every diagnostic, by file then line.
func (r *Result) Diags() []snapshot.Diagnostic {
	var out []snapshot.Diagnostic
	for _, f := range slices.Sorted(maps.Keys(r.Diagnostics)) {
		out = append(out, r.Diagnostics[f]...)
	}
	return out
}

// Errors counts the diagnostics that rejected something (not warnings).
func (r *Result) Errors() int {
	n := 0
	for _, d := range r.Diags() {
		if !d.Warning() {
			n++
		}
	}
	return n
}

// Load reads every .yaml and .yml file below dir (hidden files and folders
// are skipped), as a directory source first reads it. A missing or
// unreadable dir is an error; problems in files are diagnostics, and
// everything sound still loads.
func Load(dir string) (*Result, error) { return LoadWith(dir, Limits{}) }

// LoadWith is Load with limits.
func LoadWith(dir string, limits Limits) (*Result, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("config dir: %w (pass --config with a directory of YAML manifests)", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("config dir %s is a file; pass the directory that holds it", dir)
	}
	return loadFS(os.DirFS(dir), limits)
}

// LoadFS is Load over any file system, such as the embedded demo.
func LoadFS(fsys fs.FS) (*Result, error) { return loadFS(fsys, Limits{}) }

func loadFS(fsys fs.FS, limits Limits) (*Result, error) {
	t := newTree(limits)
	ev, _, err := t.scan(context.Background(), fsys)
	if err != nil {
		return nil, fmt.Errorf("reading config dir: %w", err)
	}
	r := &Result{Objects: t.objects(), Diagnostics: map[string][]snapshot.Diagnostic{}}
	for f, d := range ev.Diagnostics {
		if len(d) > 0 {
			r.Diagnostics[f] = d
		}
	}
	return r, nil
}

// Mesh returns a new mesh holding the result's objects and diagnostics.
func (r *Result) Mesh() *model.Mesh {
	m := model.NewMesh()
	m.Apply(model.Adds(r.Objects))
	for f, d := range r.Diagnostics {
		m.SetDiagnostics(f, d)
	}
	return m
}
