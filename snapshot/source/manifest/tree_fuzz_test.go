package manifest

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/xdshard/xdshard/snapshot/model"
)

// fuzzTree turns fuzz input into a directory: files separated by 0xff
// bytes, each file's first byte choosing its folder and whether it is a
// regular file.
func fuzzTree(data []byte, at time.Time) fstest.MapFS {
	fsys := fstest.MapFS{}
	for i, part := range bytes.Split(data, []byte{0xff}) {
		if i >= 8 {
			break
		}
		name := "f" + strconv.Itoa(i) + ".yaml"
		var flags byte
		if len(part) > 0 {
			flags, part = part[0], part[1:]
		}
		if flags&1 != 0 {
			name = "sub/" + name
		}
		f := &fstest.MapFile{Data: part, ModTime: at}
		if flags&2 != 0 {
			f.Mode = fs.ModeNamedPipe
		}
		fsys[name] = f
	}
	return fsys
}

// FuzzTree drives the directory source's reading with a file system as
// input: any content, size, alias nesting, non-regular files, and a second
// read in which files were cut short (a partial write that settled) or
// replaced by FIFOs. Whatever the input: no panic; every served object is
// owned by the file first by path of those that define it; an object is
// served once; and a file that turned unreadable keeps serving what it
// served.
func FuzzTree(f *testing.F) {
	demo, _ := filepath.Glob("../demo/mesh/*.yaml")
	var all []byte
	for _, s := range demo {
		if b, err := os.ReadFile(s); err == nil {
			all = append(append(append(all, 0), b...), 0xff)
		}
	}
	f.Add(all, uint16(100), byte(0))
	f.Add([]byte("\x00apiVersion: v1\nkind: Namespace\nmetadata: {name: a, labels: &l {x: y}}\n\xff\x00apiVersion: v1\nkind: Namespace\nmetadata: {name: a, labels: *l}\n"), uint16(20), byte(2))
	f.Add([]byte("\x00a: &a [x,x,x,x]\nb: &b [*a,*a,*a,*a]\nc: [*b,*b,*b,*b]\n"), uint16(5), byte(1))
	f.Fuzz(func(t *testing.T, data []byte, cut uint16, turn byte) {
		limits := Limits{FileBytes: 64 << 10, DocumentBytes: 16 << 10}
		tr := newTree(limits)
		tr.workers = 3 // files decoded side by side (read.go) ...
		serial := newTree(limits)
		serial.workers = 1     // ... read as one by one,
		serial.touchAll = true // every key of a file read resolved again
		t0 := time.Unix(1e9, 0)
		first := fuzzTree(data, t0)
		ev, _, err := tr.scan(context.Background(), first)
		if err != nil {
			t.Fatalf("first scan: %v", err)
		}
		checkTree(t, tr)
		sameAsSerial(t, serial, first, ev)
		servedBy := map[model.Key]string{}
		for k := range tr.served {
			servedBy[k] = tr.owner[k]
		}
		// The second read: files cut at cut bytes, and those picked by
		// turn's bits turned into FIFOs.
		second := fstest.MapFS{}
		turned := map[string]bool{}
		i := 0
		for _, name := range sortedNames(first) {
			f := *first[name]
			f.ModTime = t0.Add(time.Second)
			if int(cut) < len(f.Data) {
				f.Data = f.Data[:cut]
			}
			if turn&(1<<(i%8)) != 0 {
				f.Mode, turned[name] = fs.ModeNamedPipe, true
			}
			second[name] = &f
			i++
		}
		ev, _, err = tr.scan(context.Background(), second)
		if err != nil {
			t.Fatalf("second scan: %v", err)
		}
		checkTree(t, tr)
		sameAsSerial(t, serial, second, ev)
		for k, file := range servedBy {
			if turned[file] && tr.served[k] == nil {
				t.Fatalf("%s was served from %s, which turned unreadable, and is served no more", k, file)
			}
		}
	})
}

// sameAsSerial scans fsys with serial, a tree decoding one file at a
// time and resolving every key of each file read, and checks its event is
// ev: decoding files side by side, and resolving only the keys whose
// object changed, change nothing of what is served or said.
func sameAsSerial(t *testing.T, serial *tree, fsys fs.FS, ev model.Event) {
	t.Helper()
	want, _, err := serial.scan(context.Background(), fsys)
	if err != nil {
		t.Fatalf("serial scan: %v", err)
	}
	if got, want := eventSummary(ev), eventSummary(want); got != want {
		t.Fatalf("decoded side by side:\n%s\none by one:\n%s", got, want)
	}
}

func eventSummary(ev model.Event) string {
	var b strings.Builder
	for _, c := range ev.Changes {
		fmt.Fprintf(&b, "%s %v", c.Key, c.Object != nil)
		if c.Object != nil {
			fmt.Fprintf(&b, " at %s %v", c.Object.Origin, c.Object.Body)
		}
		b.WriteByte('\n')
	}
	for _, f := range slices.Sorted(maps.Keys(ev.Diagnostics)) {
		fmt.Fprintf(&b, "%s: %v\n", f, ev.Diagnostics[f])
	}
	return b.String()
}

func sortedNames(m fstest.MapFS) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// checkTree checks the tree's invariants.
func checkTree(t *testing.T, tr *tree) {
	t.Helper()
	seen := map[model.Key]bool{}
	for _, o := range tr.objects() {
		if seen[o.Key] {
			t.Fatalf("%s served twice", o.Key)
		}
		seen[o.Key] = true
	}
	for k, o := range tr.served {
		owner := tr.owner[k]
		st := tr.files[owner]
		if st == nil || st.objs[k] != o {
			t.Fatalf("%s is served from %q, which does not define it", k, owner)
		}
		// The copy served is the one in the file first by path, whatever
		// the order the files were read in.
		for _, p := range slices.Sorted(maps.Keys(tr.files)) {
			if tr.files[p].objs[k] != nil {
				if p != owner {
					t.Fatalf("%s is served from %q, but %q, first by path, defines it", k, owner, p)
				}
				break
			}
		}
		if !seen[k] {
			t.Fatalf("%s is served but not listed", k)
		}
	}
}
