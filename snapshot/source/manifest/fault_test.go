package manifest

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"testing/fstest"
	"time"

	"github.com/xdshard/xdshard/snapshot/model"
)

// Each test here is one way the directory source failed on 300462e: it
// stopped following, deleted config it could not read, decoded half a file,
// or wedged on a file that never ends. follow_test.go has those found
// since.

// startSourceWith runs a source with the given settle and resync.
func startSourceWith(t *testing.T, dir string, settle, resync time.Duration) <-chan model.Event {
	t.Helper()
	events := make(chan model.Event, 64)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	s := NewSource(dir, nil)
	s.Limits.Settle, s.Resync = settle, resync
	go func() { done <- s.Run(ctx, func(e model.Event) { events <- e }) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return within 5s of its context ending")
		}
	})
	return events
}

// waitFor returns the first event satisfying ok, failing after 10 s.
func waitFor(t *testing.T, events <-chan model.Event, what string, ok func(model.Event) bool) model.Event {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case e := <-events:
			if ok(e) {
				return e
			}
		case <-deadline:
			t.Fatalf("never saw %s", what)
			return model.Event{}
		}
	}
}

func changes(name string, deleted bool) func(model.Event) bool {
	return func(e model.Event) bool {
		for _, c := range e.Changes {
			if c.Key.Name == name && (c.Object == nil) == deleted {
				return true
			}
		}
		return false
	}
}

func diagnosed(file, contains string) func(model.Event) bool {
	return func(e model.Event) bool {
		for _, d := range e.Diagnostics[file] {
			if strings.Contains(d.Message, contains) {
				return true
			}
		}
		return false
	}
}

func noDeletes(t *testing.T, e model.Event) {
	t.Helper()
	for _, c := range e.Changes {
		if c.Object == nil {
			t.Fatalf("%s was deleted, but nothing deleted it", c.Key)
		}
	}
}

// TestDirectoryRemovedAndRecreatedIsFollowed: removing the directory keeps
// its config; creating it again is read again.
func TestDirectoryRemovedAndRecreatedIsFollowed(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "mesh")
	write(t, filepath.Join(dir, "web.yaml"), svcYAML, "web", 80)
	events := startSourceWith(t, dir, 20*time.Millisecond, 100*time.Millisecond)
	waitFor(t, events, "the first state", func(e model.Event) bool { return e.Synced })
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	// A resync finds no directory: it says so, and keeps everything.
	gone := waitFor(t, events, "the missing directory reported", func(e model.Event) bool { return len(e.Diagnostics[dir]) > 0 })
	noDeletes(t, gone)
	write(t, filepath.Join(dir, "web.yaml"), svcYAML, "web", 8080)
	write(t, filepath.Join(dir, "api.yaml"), svcYAML, "api", 80)
	e := waitFor(t, events, "api read from the recreated directory", changes("api", false))
	noDeletes(t, e)
}

// TestUnreadableFileKeepsItsObjects: a file that cannot be read (here a
// dangling symbolic link, since tests run as root and permissions do not
// stop root) keeps its objects, with a diagnostic; a FIFO or a link to a
// device named *.yaml is not read at all and does not wedge the source.
func TestUnreadableFileKeepsItsObjects(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "web.yaml"), svcYAML, "web", 80)
	write(t, filepath.Join(dir, "api.yaml"), svcYAML, "api", 80)
	if err := syscall.Mkfifo(filepath.Join(dir, "pipe.yaml"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/dev/zero", filepath.Join(dir, "zero.yaml")); err != nil {
		t.Fatal(err)
	}
	events := startSourceWith(t, dir, 20*time.Millisecond, time.Hour)
	first := waitFor(t, events, "the first state", func(e model.Event) bool { return e.Synced })
	if len(first.Changes) != 2 {
		t.Fatalf("first state %v, want web and api", first.Changes)
	}
	for _, f := range []string{"pipe.yaml", "zero.yaml"} {
		if !diagnosed(f, "not a regular file")(first) {
			t.Errorf("%s: no diagnostic in %v", f, first.Diagnostics)
		}
	}
	if err := os.Remove(filepath.Join(dir, "web.yaml")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "gone"), filepath.Join(dir, "web.yaml")); err != nil {
		t.Fatal(err)
	}
	e := waitFor(t, events, "a diagnostic for the unreadable web.yaml", diagnosed("web.yaml", "cannot be read"))
	noDeletes(t, e)
	// The source still follows the other files.
	write(t, filepath.Join(dir, "api.yaml"), svcYAML, "api", 81)
	noDeletes(t, waitFor(t, events, "api's edit", changes("api", false)))
}

// TestHalfWrittenFileIsNeverDecoded: a file rewritten in place by a writer
// that pauses mid-file is decoded only once it is left alone.
func TestHalfWrittenFileIsNeverDecoded(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "web.yaml")
	write(t, path, svcYAML, "web", 80)
	events := startSourceWith(t, dir, 300*time.Millisecond, time.Hour)
	waitFor(t, events, "the first state", func(e model.Event) bool { return e.Synced })
	full := strings.ReplaceAll(svcYAML, "%s", "web")
	full = strings.Replace(full, "%d", "8080", 1)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	half := len(full) / 2
	if _, err := f.WriteString(full[:half]); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // the writer pauses
	if _, err := f.WriteString(full[half:]); err != nil {
		t.Fatal(err)
	}
	f.Close()
	e := waitFor(t, events, "the finished edit", func(e model.Event) bool {
		if len(e.Diagnostics["web.yaml"]) > 0 {
			t.Fatalf("the half-written file was decoded: %v", e.Diagnostics["web.yaml"])
		}
		return changes("web", false)(e)
	})
	noDeletes(t, e)
}

// TestShutdownDuringFirstRead: a source whose directory holds a FIFO that
// no one writes starts, and stops when asked.
func TestShutdownDuringFirstRead(t *testing.T) {
	dir := t.TempDir()
	if err := syscall.Mkfifo(filepath.Join(dir, "pipe.yaml"), 0o644); err != nil {
		t.Fatal(err)
	}
	events := startSourceWith(t, dir, 20*time.Millisecond, time.Hour) // Cleanup checks Run returns
	waitFor(t, events, "the first state", func(e model.Event) bool { return e.Synced })
}

// TestAliasBombIsADiagnostic: a 1 MB document of nested aliases ("billion
// laughs") costs a diagnostic, not gigabytes: before, 1 MB took 3 GB and 12
// CPU s, and 2 MB ended the process.
func TestAliasBombIsADiagnostic(t *testing.T) {
	var b strings.Builder
	b.WriteString("apiVersion: v1\nkind: Service\nmetadata: {name: bomb, namespace: shop}\nspec:\n  a0: &a0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n")
	for i := 1; i < 30; i++ {
		b.WriteString("  a" + itoa(i) + ": &a" + itoa(i) + " [*a" + itoa(i-1))
		for j := 0; j < 8; j++ {
			b.WriteString(",*a" + itoa(i-1))
		}
		b.WriteString("]\n")
	}
	for b.Len() < 1<<20 {
		b.WriteString("# padding to a megabyte, as the report had it\n")
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	out := Decode("bomb.yaml", []byte(b.String()))
	runtime.ReadMemStats(&after)
	if len(out) != 1 || out[0].Diag == nil || !strings.Contains(out[0].Diag.Message, "aliases") {
		t.Fatalf("got %+v, want one diagnostic about aliases", out)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 256<<20 {
		t.Fatalf("decoding allocated %d MiB", grew>>20)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// errFS is a file system whose folder bad cannot be read.
type errFS struct{ fstest.MapFS }

func (e errFS) ReadDir(name string) ([]fs.DirEntry, error) {
	if name == "bad" {
		return nil, errors.New("permission denied")
	}
	return e.MapFS.ReadDir(name)
}

// TestUnreadableFolderKeepsItsFiles: a folder that cannot be read keeps its
// files' objects, the rest of the tree is still read, and its diagnostic
// says which folder. Before, it stopped every reload.
func TestUnreadableFolderKeepsItsFiles(t *testing.T) {
	fsys := errFS{fstest.MapFS{
		"ok/web.yaml": {Data: []byte(strings.Replace(strings.Replace(svcYAML, "%s", "web", 1), "%d", "80", 1))},
	}}
	tr := newTree(Limits{})
	fsys.MapFS["bad/api.yaml"] = &fstest.MapFile{Data: []byte(strings.Replace(strings.Replace(svcYAML, "%s", "api", 1), "%d", "80", 1))}
	// First read with bad readable: both objects.
	ev, _, err := tr.scan(context.Background(), fsys.MapFS)
	if err != nil || len(ev.Changes) != 2 {
		t.Fatalf("first scan: %v %v", ev.Changes, err)
	}
	fsys.MapFS["ok/web.yaml"].Data = []byte(strings.Replace(strings.Replace(svcYAML, "%s", "web", 1), "%d", "81", 1))
	fsys.MapFS["ok/web.yaml"].ModTime = time.Now()
	ev, _, err = tr.scan(context.Background(), fsys)
	if err != nil {
		t.Fatal(err)
	}
	editAndDiagnostic(t, ev, "web", "bad", "folder cannot be read")
}

// editAndDiagnostic checks ev is the edit of the object named edited alone,
// deleting nothing, with a diagnostic on file that says says.
func editAndDiagnostic(t *testing.T, ev model.Event, edited, file, says string) {
	t.Helper()
	noDeletes(t, ev)
	if len(ev.Changes) != 1 || ev.Changes[0].Key.Name != edited {
		t.Fatalf("changes %v, want %s's edit only", ev.Changes, edited)
	}
	if !diagnosed(file, says)(ev) {
		t.Fatalf("diagnostics %v, want one on %s saying %q", ev.Diagnostics, file, says)
	}
}

// TestRenamedFileIsReadAtOnce: a file renamed into place is whole, so it
// is read as soon as the watcher names it, without waiting to settle; a
// file written in place is read only once it has been left alone for the
// settle time, so a writer that pauses is never read half-way; and only
// the files named are looked at (a sibling's edit is not lost either).
func TestRenamedFileIsReadAtOnce(t *testing.T) {
	const settle = 2 * time.Second
	dir := t.TempDir()
	write(t, filepath.Join(dir, "web.yaml"), svcYAML, "web", 80)
	write(t, filepath.Join(dir, "api.yaml"), svcYAML, "api", 80)
	events := startSourceWith(t, dir, settle, time.Hour)
	waitFor(t, events, "the first state", func(e model.Event) bool { return e.Synced })

	start := time.Now()
	write(t, filepath.Join(dir, "web.yaml"), svcYAML, "web", 81) // temporary file, then rename
	e := waitFor(t, events, "web's rename", changes("web", false))
	if e.Seen.Before(start) || e.Seen.After(time.Now()) {
		t.Fatalf("the event says its changes were first seen at %v, not after the write (%v)", e.Seen, start)
	}
	if took := time.Since(start); took >= settle {
		t.Fatalf("a file renamed into place was read after %s, not at once (settle %s)", took, settle)
	}

	start = time.Now()
	if err := os.WriteFile(filepath.Join(dir, "api.yaml"), fmt.Appendf(nil, svcYAML, "api", 81), 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-events:
		if changes("api", false)(e) && time.Since(start) < settle-time.Second {
			t.Fatalf("a file written in place was read after %s, before it settled (%s)", time.Since(start), settle)
		}
	case <-time.After(time.Second):
	}
	waitFor(t, events, "api's edit once settled", changes("api", false))
}

// TestDecoderPanicKeepsTheFilesObjects: a file whose decoding panics
// (decoding recovers its own panics; this is the guard around a file
// decoded on another goroutine) keeps serving its last good objects, says
// so on the file, costs no other file its edit, and is read again once
// it decodes.
func TestDecoderPanicKeepsTheFilesObjects(t *testing.T) {
	svc := func(name string, port int) []byte {
		return fmt.Appendf(nil, svcYAML, name, port)
	}
	fsys := fstest.MapFS{"a.yaml": {Data: svc("a", 80)}, "b.yaml": {Data: svc("b", 80)}}
	tr := newTree(Limits{})
	tr.workers = 2
	if _, _, err := tr.scan(context.Background(), fsys); err != nil {
		t.Fatal(err)
	}
	real := decodeFile
	t.Cleanup(func() { decodeFile = real })
	decodeFile = func(ctx context.Context, file string, data []byte, l Limits, c docCache) ([]Decoded, docCache, error) {
		if file == "a.yaml" {
			panic("poison")
		}
		return real(ctx, file, data, l, c)
	}
	now := time.Now()
	fsys["a.yaml"] = &fstest.MapFile{Data: svc("a", 81), ModTime: now}
	fsys["b.yaml"] = &fstest.MapFile{Data: svc("b", 81), ModTime: now}
	ev, _, err := tr.scanPaths(context.Background(), fsys, []string{"a.yaml", "b.yaml"}, map[string]bool{"a.yaml": true, "b.yaml": true})
	if err != nil {
		t.Fatal(err)
	}
	editAndDiagnostic(t, ev, "b", "a.yaml", "could not be decoded (internal error: poison)")
	decodeFile = real
	ev, _, err = tr.scanPaths(context.Background(), fsys, []string{"a.yaml"}, map[string]bool{"a.yaml": true})
	if err != nil {
		t.Fatal(err)
	}
	if len(ev.Changes) != 1 || ev.Changes[0].Key.Name != "a" || ev.Diagnostics["a.yaml"] != nil {
		t.Fatalf("once it decodes: changes %v, diagnostics %v; want a's edit and the diagnostic cleared", ev.Changes, ev.Diagnostics)
	}
}

// TestConfigMapSwapIsReadAtOnce: a directory mounted from a ConfigMap
// changes as the kubelet changes it: the new files written whole in a new
// hidden folder, then the hidden ..data link renamed over to it. What the
// swap shows is read at once (the settle, an hour here, is for files
// written in place), not after it.
func TestConfigMapSwapIsReadAtOnce(t *testing.T) {
	dir := t.TempDir()
	version := func(name string, port int) {
		if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name, "web.yaml"), fmt.Appendf(nil, svcYAML, "web", port), 0o644); err != nil {
			t.Fatal(err)
		}
		tmp := filepath.Join(dir, "..data_tmp")
		if err := os.Symlink(name, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	version("..2026_12_06_01", 80)
	old := time.Now().Add(-2 * time.Hour) // mounted long before the replica started
	if err := os.Chtimes(filepath.Join(dir, "..2026_12_06_01", "web.yaml"), old, old); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join("..data", "web.yaml"), filepath.Join(dir, "web.yaml")); err != nil {
		t.Fatal(err)
	}
	events := startSourceWith(t, dir, time.Hour, time.Hour)
	waitFor(t, events, "the first state", func(e model.Event) bool { return e.Synced })
	version("..2026_12_06_02", 81)
	waitFor(t, events, "the swapped-in version", changes("web", false))
}
