package server_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/xdshard/xdshard/bench/fleet"
	"github.com/xdshard/xdshard/snapshot/model"
	"github.com/xdshard/xdshard/snapshot/source/manifest"
)

// BenchmarkFileEdit measures the file path alone: a 100 x 20 x 5 fleet as
// one file per namespace served with the directory source, and the time
// from an atomic rewrite of one tenant's file (one EndpointSlice changed)
// to a proxy of that tenant receiving it (median of five).
//
//	go test ./server -run '^$' -bench FileEdit -benchtime 1x -cpuprofile /tmp/file.cpu
func BenchmarkFileEdit(b *testing.B) {
	objs := fleet.Generate(fleet.Spec{Tenants: 100, Services: 20, Endpoints: 5, Seed: 1})
	dir := b.TempDir()
	byNS := writeFleet(b, dir, objs)
	// The edits are encoded before they are timed: the clock runs from
	// the write to the proxy.
	edits := map[int][]byte{}
	for gen := 101; gen <= 105; gen++ {
		slice, _ := fleet.EndpointSlice(fleet.Tenant(7), "svc-03", "http", 8080, 7, 3, 5, gen)
		list := append([]*model.Object(nil), byNS[fleet.Tenant(7)]...)
		for i, o := range list {
			if o.Key == slice.Key {
				list[i] = slice
			}
		}
		var buf bytes.Buffer
		if err := manifest.Encode(&buf, list); err != nil {
			b.Fatal(err)
		}
		edits[gen] = buf.Bytes()
	}
	r := startFileReplica(b, dir)
	for b.Loop() {
		lat := updateLatency(b, r, func(gen int) {
			replaceFile(b, filepath.Join(dir, fleet.Tenant(7)+".yaml"), edits[gen])
		})
		b.ReportMetric(lat.Seconds()*1000, "ms-file-edit")
	}
}

// writeFleet writes objs into dir, one file per namespace, as `xdshard
// bench gen` does, and returns them by namespace.
func writeFleet(tb testing.TB, dir string, objs []*model.Object) map[string][]*model.Object {
	tb.Helper()
	byNS := model.ByNamespace(objs)
	for ns, list := range byNS {
		writeNamespace(tb, dir, ns, list)
	}
	return byNS
}

// writeNamespace replaces dir/NS.yaml with list, atomically (a temporary
// file renamed into place), as editors and kubectl-style tools save.
func writeNamespace(tb testing.TB, dir, ns string, list []*model.Object) {
	tb.Helper()
	var buf bytes.Buffer
	if err := manifest.Encode(&buf, list); err != nil {
		tb.Fatal(err)
	}
	replaceFile(tb, filepath.Join(dir, ns+".yaml"), buf.Bytes())
}

// replaceFile writes data to path.tmp and renames it to path.
func replaceFile(tb testing.TB, path string, data []byte) {
	tb.Helper()
	if err := os.WriteFile(path+".tmp", data, 0o644); err != nil {
		tb.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		tb.Fatal(err)
	}
}
