package manifest

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/xdshard/xdshard/snapshot"
	"github.com/xdshard/xdshard/snapshot/model"
)

// The tests here each follow a defect of how the directory source followed
// its files, on the real Source and its watcher over files in a temporary
// directory: one file's decoding held up every other file's change (an
// 8 MB file of aliases cost 42 CPU s a write, and another tenant's edit
// made meanwhile waited 43 s); an object defined twice was resolved one
// way live and another on a restart; and a file truncated in place and
// left for 100 ms was served half-written.

// timed is an event and when the sink received it.
type timed struct {
	model.Event
	at time.Time
}

// watched is a running Source: its events, and the state they add up to.
type watched struct {
	t      *testing.T
	events chan timed
	state  served
	// every, when set, is called with every event as it is read.
	every  func(timed)
	cancel context.CancelFunc
	done   chan error
}

// follow runs s until the test ends (or stop).
func follow(t *testing.T, s *Source) *watched {
	t.Helper()
	w := &watched{t: t, events: make(chan timed, 4096), state: newServed(), done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	go func() {
		w.done <- s.Run(ctx, func(e model.Event) { w.events <- timed{e, time.Now()} })
	}()
	t.Cleanup(func() { w.stop() })
	return w
}

// stop ends the source and returns how long Run took to return.
func (w *watched) stop() time.Duration {
	if w.cancel == nil {
		return 0
	}
	start := time.Now()
	w.cancel()
	w.cancel = nil
	select {
	case err := <-w.done:
		if err != nil {
			w.t.Errorf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		w.t.Error("Run did not return within 10s of its context ending")
	}
	return time.Since(start)
}

// until reads events, adding each to the state, until one satisfies ok,
// failing after 30 s (decoding is slow under the race detector).
func (w *watched) until(what string, ok func(timed) bool) timed {
	w.t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case e := <-w.events:
			w.state.apply(e.Event)
			if w.every != nil {
				w.every(e)
			}
			if ok(e) {
				return e
			}
		case <-deadline:
			w.t.Fatalf("never saw %s; the state is\n%s", what, w.state)
			return timed{}
		}
	}
}

// reach is until for a condition on the state, which may hold already.
func (w *watched) reach(what string, ok func() bool) {
	w.t.Helper()
	w.drain()
	if !ok() {
		w.until(what, func(timed) bool { return ok() })
	}
}

// drain reads the events that came meanwhile.
func (w *watched) drain() {
	for {
		select {
		case e := <-w.events:
			w.state.apply(e.Event)
			if w.every != nil {
				w.every(e)
			}
		default:
			return
		}
	}
}

// served is what a sink holds: the objects and each file's diagnostics.
type served struct {
	objs  map[model.Key]*model.Object
	diags map[string][]snapshot.Diagnostic
}

func newServed() served {
	return served{objs: map[model.Key]*model.Object{}, diags: map[string][]snapshot.Diagnostic{}}
}

func (s served) apply(e model.Event) {
	for _, c := range e.Changes {
		if c.Object == nil {
			delete(s.objs, c.Key)
		} else {
			s.objs[c.Key] = c.Object
		}
	}
	for f, d := range e.Diagnostics {
		if len(d) == 0 {
			delete(s.diags, f)
		} else {
			s.diags[f] = d
		}
	}
}

// String lists the objects, each with its origin and content, and the
// diagnostics, in a stable order.
func (s served) String() string {
	var b strings.Builder
	for _, k := range slices.SortedFunc(maps.Keys(s.objs), compareKeys) {
		o := s.objs[k]
		var spec strings.Builder
		_ = Encode(&spec, []*model.Object{o})
		fmt.Fprintf(&b, "%s at %s: %q\n", k, o.Origin, spec.String())
	}
	for _, f := range slices.Sorted(maps.Keys(s.diags)) {
		for _, d := range s.diags[f] {
			fmt.Fprintf(&b, "%s\n", d)
		}
	}
	return b.String()
}

// writeBytes writes data to a temporary file and renames it into place.
func writeBytes(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp~"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func named(prefix string) func(timed) bool {
	return func(e timed) bool {
		for _, c := range e.Changes {
			if c.Object != nil && strings.HasPrefix(c.Key.Name, prefix) {
				return true
			}
		}
		return false
	}
}

// aliasService is a Service whose annotations are aliases of one anchored
// scalar of scalar bytes: valid, and as large once expanded as the
// aliases make it.
func aliasServices(prefix string, docs, scalar, aliases int) []byte {
	var b strings.Builder
	for i := range docs {
		if i > 0 {
			b.WriteString("---\n")
		}
		fmt.Fprintf(&b, "apiVersion: v1\nkind: Service\nmetadata:\n  name: %s-%d\n  namespace: shop\n  annotations:\n    a: &a \"%s\"\n", prefix, i, strings.Repeat("x", scalar))
		for j := range aliases {
			fmt.Fprintf(&b, "    b%d: *a\n", j)
		}
		b.WriteString("spec:\n  ports: [{port: 80}]\n")
	}
	return []byte(b.String())
}

// aliasBombFile is the file of the report: documents each an anchored
// 2.2 KB scalar and 900 aliases to it, just under the 2 MiB a document
// may expand to, as many as fit under the 8 MiB a file may have.
func aliasBombFile(t *testing.T) []byte {
	var b strings.Builder
	scalar := strings.Repeat("x", 2200)
	aliases := strings.TrimSuffix(strings.Repeat("*a,", 900), ",")
	for i := 0; ; i++ {
		doc := fmt.Sprintf("apiVersion: v1\nkind: Service\nmetadata: {name: bomb-%d, namespace: shop, annotations: {a: &a %q}}\nspec: {x: [%s]}\n", i, scalar, aliases)
		if i == 0 {
			if n := expandedSize(parseRoot(t, doc), 4<<20); n > 2<<20 || n < 2<<20*9/10 {
				t.Fatalf("a document expands to %d bytes, want just under 2 MiB", n)
			}
		}
		if b.Len()+len(doc)+4 > 8<<20 {
			break
		}
		if i > 0 {
			b.WriteString("---\n")
		}
		b.WriteString(doc)
	}
	return []byte(b.String())
}

// TestSlowFileHoldsUpNoOtherFile: a file slow to decode delays no other
// file's change. Another tenant's file is edited (renamed into place) five
// times alone, then five times while the report's alias file (refused by
// the bound on what a file's aliases expand to) is decoded, then five
// times while a file of aliases under that bound, slow to decode, is: the
// median latency from the rename to the sink each time is within
// max(2x, +50 ms) of the edits alone. The 50 ms floor is for what a busy
// two-core machine adds without anything waiting for the decoding: the
// scheduler's 10 ms time slice, a garbage collection made longer by the
// other goroutine's allocations; waiting for the slow file would add its
// whole decoding, seconds. The slow file then ends decoded; written
// again and at once replaced, the slow version is never served; and
// stopping the source while it decodes does not wait for it.
func TestSlowFileHoldsUpNoOtherFile(t *testing.T) {
	dir := t.TempDir()
	const otherSvc = "apiVersion: v1\nkind: Service\nmetadata: {name: other, namespace: other}\nspec: {ports: [{port: %d}]}\n"
	other := filepath.Join(dir, "other.yaml")
	port := 1000
	writeBytes(t, other, fmt.Appendf(nil, otherSvc, port))
	s := NewSource(dir, nil)
	s.Limits.Settle, s.Resync = 50*time.Millisecond, time.Hour
	w := follow(t, s)
	w.until("the first state", func(e timed) bool { return e.Synced })

	edits := func(what string) (median time.Duration, last time.Time) {
		t.Helper()
		var took []time.Duration
		for range 5 {
			port++
			start := time.Now()
			writeBytes(t, other, fmt.Appendf(nil, otherSvc, port))
			want := int32(port)
			e := w.until(what, func(timed) bool {
				o := w.state.objs[model.Key{Kind: model.KindService, Namespace: "other", Name: "other"}]
				return o != nil && servicePort(o) == want
			})
			took = append(took, e.at.Sub(start))
			last = e.at
		}
		slices.Sort(took)
		t.Logf("%s: %v", what, took)
		return took[len(took)/2], last
	}
	baseline, _ := edits("edits alone")
	limit := max(2*baseline, baseline+50*time.Millisecond)

	// The report's file: refused whole before anything is expanded.
	bomb := aliasBombFile(t)
	writeBytes(t, filepath.Join(dir, "bomb.yaml"), bomb)
	if got, _ := edits("edits beside the alias file"); got > limit {
		t.Errorf("with the alias file of %d bytes being read, another file's edit took %s (median), more than %s (alone: %s)", len(bomb), got, limit, baseline)
	}
	w.reach("the alias file's diagnostic", func() bool {
		return diagnosed("bomb.yaml", "once its YAML aliases are expanded")(model.Event{Diagnostics: w.state.diags})
	})
	if n := len(w.state.objs); n != 1 {
		t.Fatalf("%d objects served, want other's alone:\n%s", n, w.state)
	}

	// A file under the bound, slow to decode: 15 documents of 2 MB
	// expanded each, 30 MB of the 32 MiB a file may expand to.
	slow := filepath.Join(dir, "slow.yaml")
	var decoded time.Time // when the slow file's objects came
	w.every = func(e timed) {
		if decoded.IsZero() && named("slow-")(e) {
			decoded = e.at
		}
	}
	start := time.Now()
	writeBytes(t, slow, aliasServices("slow", 15, 2200, 900))
	got, last := edits("edits beside the slow file")
	if got > limit {
		t.Errorf("with a file slow to decode being read, another file's edit took %s (median), more than %s (alone: %s)", got, limit, baseline)
	}
	w.reach("the slow file decoded", func() bool { return !decoded.IsZero() })
	decoding := decoded.Sub(start)
	t.Logf("the slow file took %s from its rename to its objects", decoding)
	if !decoded.After(last) {
		t.Fatalf("the slow file was decoded (%s) before the edits beside it were received: this machine decodes too fast for the test to say anything", decoding)
	}
	if n := len(w.state.objs); n != 16 {
		t.Fatalf("%d objects served, want other and the slow file's 15:\n%s", n, w.state)
	}

	// Written again and replaced at once: the slow version is dropped.
	w.every = func(e timed) {
		if named("slower-")(e) {
			t.Fatalf("a superseded version of the slow file was served")
		}
	}
	writeBytes(t, slow, aliasServices("slower", 15, 2200, 900))
	writeBytes(t, slow, fmt.Appendf(nil, svcYAML, "fast", 80))
	w.until("the slow file replaced", named("fast"))
	time.Sleep(decoding) // what the dropped decoding would have taken
	w.drain()
	if n := len(w.state.objs); n != 2 {
		t.Fatalf("%d objects served, want other and fast:\n%s", n, w.state)
	}

	// Stopping while a slow file is decoded.
	writeBytes(t, slow, aliasServices("last", 15, 2200, 900))
	edits("an edit after the slow file") // its rename was looked at first: it is being decoded
	if took := w.stop(); took > decoding/2 {
		t.Fatalf("Run took %s to return while a file was decoded, against %s for the whole decoding", took, decoding)
	}
}

func servicePort(o *model.Object) int32 {
	var spec strings.Builder
	_ = Encode(&spec, []*model.Object{o})
	var p int32
	if i := strings.Index(spec.String(), "port: "); i >= 0 {
		_, _ = fmt.Sscanf(spec.String()[i:], "port: %d", &p)
	}
	return p
}

// TestFileAliasBound: the bound on what a file's aliases expand to holds
// whatever the file's documents, cached or not: a file over it is refused
// whole, keeping its last good objects, and decodes again once it is
// under it; a file without aliases never reaches it.
func TestFileAliasBound(t *testing.T) {
	limits := Limits{FileBytes: 256 << 10} // aliases may expand to 1 MiB
	one := aliasServices("s", 1, 2200, 100)
	per := expandedSize(parseRoot(t, string(one)), 1<<30)
	under := aliasServices("s", int(1<<20/per), 2200, 100)
	over := aliasServices("s", int(1<<20/per)+1, 2200, 100)
	out, cache, err := decodeDocs(context.Background(), "f.yaml", under, limits, nil)
	if err != nil || len(out) != int(1<<20/per) {
		t.Fatalf("under the bound: %d documents, %v", len(out), err)
	}
	// Over it by one document, the others taken from the cache.
	if _, _, err := decodeDocs(context.Background(), "f.yaml", over, limits, cache); err == nil {
		t.Fatal("a file over the bound, its other documents cached, was decoded")
	}
	if d := DecodeWith("f.yaml", over, limits); len(d) != 1 || d[0].Diag == nil || !strings.Contains(d[0].Diag.Message, "once its YAML aliases are expanded") {
		t.Fatalf("DecodeWith over the bound: %+v", d)
	}

	fsys := map[string][]byte{"f.yaml": under}
	tr := newTree(limits)
	ev, _, err := tr.scan(context.Background(), mapFS(fsys, time.Unix(1e9, 0)))
	if err != nil || len(ev.Changes) != len(out) {
		t.Fatalf("first read: %d changes, %v", len(ev.Changes), err)
	}
	fsys["f.yaml"] = over
	ev, _, err = tr.scan(context.Background(), mapFS(fsys, time.Unix(1e9+1, 0)))
	if err != nil {
		t.Fatal(err)
	}
	noDeletes(t, ev)
	if len(ev.Changes) != 0 || !diagnosed("f.yaml", "its objects are kept as last read")(ev) {
		t.Fatalf("over the bound: changes %v, diagnostics %v", ev.Changes, ev.Diagnostics)
	}

	// No aliases: a file at its largest expands to about twice its bytes.
	r, err := Load("../demo/mesh")
	if err != nil {
		t.Fatal(err)
	}
	var plain strings.Builder
	for plain.Len() < 256<<10-16<<10 {
		if err := Encode(&plain, r.Objects); err != nil {
			t.Fatal(err)
		}
		plain.WriteString("---\n")
	}
	if _, _, err := decodeDocs(context.Background(), "plain.yaml", []byte(plain.String()), limits, nil); err != nil {
		t.Fatalf("a file without aliases: %v", err)
	}
}

// TestDuplicatesResolveAsOnRestart: an object defined twice is served from
// the file first by path (a.yaml before m.yaml), whichever arrived first:
// live, on a fresh start over the same directory, and as `xdshard check`
// reads it (manifest.LoadWith with the --max-file-bytes limit, as
// cmd/xdshard's input.load), for a Service and for a Namespace that names
// another tenant. The other copy has the diagnostic naming both places.
func TestDuplicatesResolveAsOnRestart(t *testing.T) {
	ns := func(tenant string) []byte {
		return []byte("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {xdshard.io/tenant: " + tenant + "}}\n")
	}
	kinds := []struct {
		name               string
		existing, newcomer []byte
		key                model.Key
	}{
		{"Service", fmt.Appendf(nil, svcYAML, "web", 80), fmt.Appendf(nil, svcYAML, "web", 9999), model.Key{Kind: model.KindService, Namespace: "shop", Name: "web"}},
		{"Namespace", ns("acme"), ns("globex"), model.Key{Kind: model.KindNamespace, Name: "shop"}},
	}
	for _, k := range kinds {
		for _, order := range []string{"existing then new", "new then existing", "both at once"} {
			t.Run(k.name+"/"+order, func(t *testing.T) {
				dir := t.TempDir()
				existing, newcomer := filepath.Join(dir, "m.yaml"), filepath.Join(dir, "a.yaml")
				var w *watched
				start := func() {
					s := NewSource(dir, nil)
					s.Limits.Settle, s.Resync = 50*time.Millisecond, time.Hour
					w = follow(t, s)
					w.until("the first state", func(e timed) bool { return e.Synced })
				}
				switch order {
				case "existing then new":
					writeBytes(t, existing, k.existing)
					start()
					writeBytes(t, newcomer, k.newcomer)
					// The takeover is at once, and visible.
					w.until("a.yaml's copy served", func(e timed) bool {
						return diagnosed("m.yaml", "the copy at a.yaml:1 is served")(e.Event)
					})
				case "new then existing":
					writeBytes(t, newcomer, k.newcomer)
					start()
					writeBytes(t, existing, k.existing)
				case "both at once":
					start()
					writeBytes(t, existing, k.existing)
					writeBytes(t, newcomer, k.newcomer)
				}
				fresh, check := freshState(t, dir), checkState(t, dir)
				if fresh != check {
					t.Fatalf("a fresh start serves\n%s\nxdshard check reads\n%s", fresh, check)
				}
				w.reach("the live state to be the fresh start's", func() bool { return w.state.String() == fresh })
				o := w.state.objs[k.key]
				if o == nil || o.Origin.File != "a.yaml" {
					t.Fatalf("served %v, want a.yaml's copy:\n%s", o, w.state)
				}
				if d := w.state.diags["m.yaml"]; len(d) != 1 || !strings.Contains(d[0].Message, "defined twice: the copy at a.yaml:1 is served") || !strings.HasPrefix(d[0].Origin, "m.yaml:") {
					t.Fatalf("m.yaml's diagnostics %v, want one naming both places", d)
				}
			})
		}
	}
}

// freshState is what a Source started on dir reports first.
func freshState(t *testing.T, dir string) string {
	t.Helper()
	s := NewSource(dir, nil)
	s.Limits.Settle, s.Resync = 50*time.Millisecond, time.Hour
	w := follow(t, s)
	w.until("the first state", func(e timed) bool { return e.Synced })
	w.stop()
	return w.state.String()
}

// checkState is what `xdshard check --config dir` reads (cmd/xdshard's
// input.load, with --max-file-bytes at its default).
func checkState(t *testing.T, dir string) string {
	t.Helper()
	r, err := LoadWith(dir, Limits{FileBytes: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	s := newServed()
	s.apply(model.Event{Changes: model.Adds(r.Objects), Diagnostics: r.Diagnostics})
	return s.String()
}

// TestTruncatedInPlaceIsNeverServed: a file written in place whose writer
// truncates it, writes a prefix holding 2 of its 6 Services and pauses
// 1 s is never served half-written (it was: a tenant went from 6
// clusters to 2, then back); once the writer finishes and leaves it for
// the settle time, the whole new file is served. The source runs with its
// defaults.
func TestTruncatedInPlaceIsNeverServed(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "shop.yaml")
	file := func(port int) []byte {
		var b []byte
		for i := range 6 {
			b = fmt.Appendf(b, "---\n"+svcYAML, fmt.Sprint("svc-", i), port+i)
		}
		return b
	}
	if err := os.WriteFile(path, file(80), 0o644); err != nil {
		t.Fatal(err)
	}
	w := follow(t, NewSource(dir, nil))
	w.until("the first state", func(e timed) bool { return e.Synced })
	if n := len(w.state.objs); n != 6 {
		t.Fatalf("first state: %d objects, want 6:\n%s", n, w.state)
	}
	w.every = func(e timed) {
		if n := len(w.state.objs); n != 6 {
			t.Fatalf("%d objects served: the file was read half-written:\n%s", n, w.state)
		}
	}
	next := file(9000)
	cut := 0
	for range 3 { // the third "---": two Services before it
		cut += strings.Index(string(next[cut:]), "---\n") + 1
	}
	cut--
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(next[:cut]); err != nil {
		t.Fatal(err)
	}
	if d := Decode("prefix.yaml", next[:cut]); len(d) != 2 || d[0].Object == nil || d[1].Object == nil {
		t.Fatalf("the prefix decodes to %+v, want two Services", d)
	}
	time.Sleep(time.Second) // the writer pauses
	w.drain()
	if _, err := f.Write(next[cut:]); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	w.reach("the finished file", func() bool {
		for i := range 6 {
			o := w.state.objs[model.Key{Kind: model.KindService, Namespace: "shop", Name: fmt.Sprint("svc-", i)}]
			if o == nil || servicePort(o) != int32(9000+i) {
				return false
			}
		}
		return true
	})
}

func parseRoot(t *testing.T, doc string) *yaml.Node {
	t.Helper()
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(doc), &n); err != nil || len(n.Content) == 0 {
		t.Fatalf("parsing %.80q: %v", doc, err)
	}
	return n.Content[0]
}

func mapFS(files map[string][]byte, at time.Time) fstest.MapFS {
	fsys := fstest.MapFS{}
	for name, data := range files {
		fsys[name] = &fstest.MapFile{Data: data, ModTime: at}
	}
	return fsys
}

// TestRenamedFileIsNotPutBackWhileDecoded: a file renamed into place is
// whole however it is looked at again while it is decoded (here by the
// directory looked at whole every 50 ms): its decoding is neither dropped
// nor made to wait for the settle time, which a file written in place
// would.
func TestRenamedFileIsNotPutBackWhileDecoded(t *testing.T) {
	dir := t.TempDir()
	entered, release := make(chan struct{}, 16), make(chan struct{})
	calls := 0
	real := decodeFile
	t.Cleanup(func() { decodeFile = real })
	decodeFile = func(ctx context.Context, file string, data []byte, l Limits, c docCache) ([]Decoded, docCache, error) {
		if file == "slow.yaml" {
			calls++ // one at a time: the test fails if not
			entered <- struct{}{}
			select {
			case <-release:
			case <-ctx.Done():
				return nil, nil, ctx.Err()
			}
		}
		return real(ctx, file, data, l, c)
	}
	s := NewSource(dir, nil)
	s.Limits.Settle, s.Resync = time.Hour, 50*time.Millisecond
	w := follow(t, s)
	w.until("the first state", func(e timed) bool { return e.Synced })
	writeBytes(t, filepath.Join(dir, "slow.yaml"), fmt.Appendf(nil, svcYAML, "slow", 80))
	<-entered
	time.Sleep(300 * time.Millisecond) // the directory is looked at whole meanwhile
	close(release)
	w.until("slow.yaml's object", named("slow"))
	w.stop()
	if calls != 1 {
		t.Fatalf("slow.yaml was decoded %d times, want once", calls)
	}
}

// TestRenamesIntoPlaceUnderABusyLoop: the files of a burst of atomic
// rewrites (each written beside its name, then renamed over it, as the
// bench's every-tenant event and kubectl do) are each read as renamed
// into place, however busy the loop is between a rename's two events.
// The watcher paired them by the clock (a creation within 50 ms of a
// rename's source event), and a sink slower than that between the two
// made the target a file written in place, read only after Settle: the
// bench's every-tenant rewrite had one tenant's proxies 2 s late now and
// then. With Settle an hour, such a file is never read, and the test
// hangs until its ceiling.
func TestRenamesIntoPlaceUnderABusyLoop(t *testing.T) {
	dir := t.TempDir()
	const files = 40
	for i := range files {
		p := filepath.Join(dir, fmt.Sprintf("f%02d.yaml", i))
		writeBytes(t, p, fmt.Appendf(nil, svcYAML, fmt.Sprintf("old-%02d", i), 80))
		old := time.Now().Add(-2 * time.Hour) // settled, for the first read
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
	s := NewSource(dir, nil)
	s.Limits.Settle = time.Hour
	events := make(chan model.Event, 4096)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- s.Run(ctx, func(e model.Event) {
			if !e.Synced {
				time.Sleep(3 * renameWindow / 2) // a busy loop: a build taking the change, say
			}
			events <- e
		})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	if e := <-events; !e.Synced {
		t.Fatalf("the first event is not the first state: %+v", e)
	}
	want := map[string]bool{}
	for i := range files {
		want[fmt.Sprintf("new-%02d", i)] = true
		tmp := filepath.Join(dir, fmt.Sprintf("f%02d.yaml.tmp", i))
		if err := os.WriteFile(tmp, fmt.Appendf(nil, svcYAML, fmt.Sprintf("new-%02d", i), 80), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i := range files {
		if err := os.Rename(filepath.Join(dir, fmt.Sprintf("f%02d.yaml.tmp", i)), filepath.Join(dir, fmt.Sprintf("f%02d.yaml", i))); err != nil {
			t.Fatal(err)
		}
	}
	ceiling := time.After(time.Minute)
	for len(want) > 0 {
		select {
		case e := <-events:
			for _, c := range e.Changes {
				if c.Object != nil {
					delete(want, c.Key.Name)
				}
			}
		case <-ceiling:
			t.Fatalf("after a minute, %d renamed files were still unread (taken as written in place, waiting to settle): %v", len(want), slices.Sorted(maps.Keys(want)))
		}
	}
}

// TestAppliedSaysWhenAWriteIsRead: Applied, the sync point a writer
// waits on, holds for a file's version once the sink has been given it,
// and not for a version written but not read yet (written in place, with
// Settle an hour).
func TestAppliedSaysWhenAWriteIsRead(t *testing.T) {
	dir := t.TempDir()
	web, api := filepath.Join(dir, "web.yaml"), filepath.Join(dir, "sub", "api.yaml")
	write(t, web, svcYAML, "web", 80)
	write(t, api, svcYAML, "api", 80)
	old := time.Now().Add(-2 * time.Hour) // settled: the first read takes them
	for _, p := range []string{web, api} {
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
	s := NewSource(dir, nil)
	s.Limits.Settle = time.Hour
	w := follow(t, s)
	w.until("the first state", func(e timed) bool { return e.Synced })
	applied := func(path, rel string) bool {
		info, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return s.Applied(rel, info)
	}
	wait := func(path, rel string) {
		t.Helper()
		for deadline := time.Now().Add(time.Minute); !applied(path, rel); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s never applied (hang check)", rel)
			}
		}
	}
	wait(web, "web.yaml")
	wait(api, "sub/api.yaml")
	if err := os.WriteFile(api, fmt.Appendf(nil, svcYAML, "api", 8080), 0o644); err != nil {
		t.Fatal(err)
	}
	if applied(api, "sub/api.yaml") {
		t.Fatal("a version written in place, not read for an hour, is applied")
	}
	write(t, web, svcYAML, "web", 81)
	w.until("web's rename", named("web"))
	wait(web, "web.yaml")
	if applied(api, "sub/api.yaml") {
		t.Fatal("a version written in place, not read for an hour, is applied")
	}
	// A file removed is forgotten: names that come and go are not kept.
	if err := os.Remove(web); err != nil {
		t.Fatal(err)
	}
	w.until("web's removal", func(e timed) bool {
		for _, c := range e.Changes {
			if c.Object == nil && c.Key.Name == "web" {
				return true
			}
		}
		return false
	})
	s.mu.Lock()
	_, kept := s.applied["web.yaml"]
	s.mu.Unlock()
	if kept {
		t.Fatal("web.yaml removed is still among the files applied")
	}
	w.stop()
}
