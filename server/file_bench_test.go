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
	byNS := model.ByNamespace(objs)
	writeNS := func(ns string, list []*model.Object) {
		var buf bytes.Buffer
		if err := manifest.Encode(&buf, list); err != nil {
			b.Fatal(err)
		}
		path := filepath.Join(dir, ns+".yaml")
		if err := os.WriteFile(path+".tmp", buf.Bytes(), 0o644); err != nil {
			b.Fatal(err)
		}
		if err := os.Rename(path+".tmp", path); err != nil {
			b.Fatal(err)
		}
	}
	for ns, list := range byNS {
		writeNS(ns, list)
	}
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
			path := filepath.Join(dir, fleet.Tenant(7)+".yaml")
			if err := os.WriteFile(path+".tmp", edits[gen], 0o644); err != nil {
				b.Fatal(err)
			}
			if err := os.Rename(path+".tmp", path); err != nil {
				b.Fatal(err)
			}
		})
		b.ReportMetric(lat.Seconds()*1000, "ms-file-edit")
	}
}
