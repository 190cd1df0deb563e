// Package demo embeds a small, realistic mesh (three tenants and the shared
// istio-system) that `xdshard serve` and `xdshard render` use when no
// --config is given, and that tests and the README examples rely on.
package demo

import (
	"embed"
	"io/fs"
	"os"
	"path/filepath"
)

//go:embed mesh
var files embed.FS

// FS returns the demo mesh's manifests.
func FS() fs.FS {
	sub, err := fs.Sub(files, "mesh")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	return sub
}

// WriteTo copies the demo mesh's manifests into dir, for a directory
// source to serve and follow (tests edit the copy).
func WriteTo(dir string) error {
	return fs.WalkDir(FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(FS(), p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, p), b, 0o644)
	})
}
