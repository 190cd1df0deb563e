package manifest

import (
	"bytes"
	"context"
	"testing"
	"testing/fstest"
	"time"

	"github.com/xdshard/xdshard/bench/fleet"
	"github.com/xdshard/xdshard/snapshot/model"
)

// fleetFiles is the file-driven bench's fleet (tenants x 50 services x 5
// endpoints; the bench runs 50 tenants) as one file per namespace, with
// every VirtualService's weight set to weight.
func fleetFiles(tb testing.TB, tenants, weight int, at time.Time) fstest.MapFS {
	tb.Helper()
	byNS := map[string][]*model.Object{}
	for _, o := range fleet.Generate(fleet.Spec{Tenants: tenants, Services: 50, Endpoints: 5, Seed: 1}) {
		if o.Kind == model.KindVirtualService {
			o = fleet.VirtualService(o.Namespace, o.Name, weight)
		}
		ns := o.Namespace
		if ns == "" {
			ns = o.Name
		}
		byNS[ns] = append(byNS[ns], o)
	}
	fsys := fstest.MapFS{}
	for ns, objs := range byNS {
		var b bytes.Buffer
		if err := Encode(&b, objs); err != nil {
			tb.Fatal(err)
		}
		fsys[ns+".yaml"] = &fstest.MapFile{Data: b.Bytes(), ModTime: at}
	}
	return fsys
}

// BenchmarkRescanEditedFiles is the source's part of the file-driven
// bench's "every tenant's file": 50 files read again, in each the
// VirtualServices' weights changed, the rest of the file as it was.
// TestRescanEditedFiles checks what it yields.
func BenchmarkRescanEditedFiles(b *testing.B) {
	t0 := time.Unix(1e9, 0)
	versions := []fstest.MapFS{fleetFiles(b, 50, 30, t0), fleetFiles(b, 50, 70, t0)}
	tr := newTree(Limits{})
	if _, _, err := tr.scan(context.Background(), versions[0]); err != nil {
		b.Fatal(err)
	}
	paths := sortedNames(versions[0])
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		fsys := versions[i%2]
		for _, f := range fsys {
			f.ModTime = t0.Add(time.Duration(i) * time.Second)
		}
		if _, _, err := tr.scanPaths(context.Background(), fsys, paths, nil); err != nil {
			b.Fatal(err)
		}
	}
}

func TestRescanEditedFiles(t *testing.T) {
	t0 := time.Unix(1e9, 0)
	first, second := fleetFiles(t, 5, 30, t0), fleetFiles(t, 5, 70, t0.Add(time.Second))
	tr := newTree(Limits{})
	if _, _, err := tr.scan(context.Background(), first); err != nil {
		t.Fatal(err)
	}
	ev, _, err := tr.scanPaths(context.Background(), second, sortedNames(second), nil)
	if err != nil {
		t.Fatal(err)
	}
	vs := 0
	for _, c := range ev.Changes {
		if c.Key.Kind != model.KindVirtualService || c.Object == nil {
			t.Fatalf("a change to %s, want only VirtualServices replaced", c.Key)
		}
		vs++
	}
	if want := 5 * 38; vs != want {
		t.Fatalf("%d VirtualServices changed, want %d", vs, want)
	}
	if len(ev.Diagnostics) != 0 {
		t.Fatalf("diagnostics: %v", ev.Diagnostics)
	}
}
