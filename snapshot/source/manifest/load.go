package manifest

import (
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/xdshard/xdshard/snapshot"
	"github.com/xdshard/xdshard/snapshot/model"
)

// Result is everything read from a set of manifests.
type Result struct {
	Objects     []*model.Object
	Diagnostics map[string][]snapshot.Diagnostic // by file; files without problems are absent
	hashes      map[model.Key]string
	failed      map[model.Key]bool // keys whose document was found but rejected
}

// Diags returns every diagnostic, by file then line.
func (r *Result) Diags() []snapshot.Diagnostic {
	var out []snapshot.Diagnostic
	for _, f := range slices.Sorted(maps.Keys(r.Diagnostics)) {
		out = append(out, r.Diagnostics[f]...)
	}
	return out
}

// Load reads every .yaml and .yml file below dir (hidden files and folders
// are skipped). A missing or unreadable dir is an error; problems in files
// are diagnostics, and everything sound still loads.
func Load(dir string) (*Result, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("config dir: %w (pass --config with a directory of YAML manifests)", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("config dir %s is a file; pass the directory that holds it", dir)
	}
	return LoadFS(os.DirFS(dir))
}

// LoadFS is Load over any file system, such as the embedded demo.
func LoadFS(fsys fs.FS) (*Result, error) {
	files, err := manifestFiles(fsys)
	if err != nil {
		return nil, err
	}
	r := &Result{Diagnostics: map[string][]snapshot.Diagnostic{}, hashes: map[model.Key]string{}, failed: map[model.Key]bool{}}
	seen := map[model.Key]model.Origin{}
	for _, f := range files {
		data, err := fs.ReadFile(fsys, f)
		if err != nil {
			r.add(f, model.Problem(model.Origin{File: f}, nil, fmt.Sprintf("cannot read: %v", err)))
			continue
		}
		for _, d := range Decode(f, data) {
			if d.Diag != nil {
				r.add(f, *d.Diag)
			}
			if d.Object == nil {
				if d.Key != nil {
					r.failed[*d.Key] = true
				}
				continue
			}
			if first, dup := seen[d.Object.Key]; dup {
				r.add(f, model.Reject(d.Object, fmt.Sprintf("defined twice: first at %s; rename or delete one (the first is kept)", first)))
				continue
			}
			seen[d.Object.Key] = d.Object.Origin
			r.Objects = append(r.Objects, d.Object)
			r.hashes[d.Object.Key] = d.Hash
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

func (r *Result) add(file string, d snapshot.Diagnostic) {
	r.Diagnostics[file] = append(r.Diagnostics[file], d)
}

func manifestFiles(fsys fs.FS) ([]string, error) {
	var files []string
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if p != "." && strings.HasPrefix(name, ".") {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if !d.IsDir() && isManifest(name) {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading config dir: %w", err)
	}
	slices.Sort(files)
	return files, nil
}

func isManifest(name string) bool {
	ext := path.Ext(name)
	return ext == ".yaml" || ext == ".yml"
}
