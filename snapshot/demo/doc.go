// Package demo embeds a small, realistic mesh (three tenants and the shared
// istio-system) that `xdshard serve` and `xdshard render` use when no
// --config is given, and that tests and the README examples rely on.
package demo

import (
	"embed"
	"io/fs"
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
