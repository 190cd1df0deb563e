package manifest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"path"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/xdshard/xdshard/snapshot"
	"github.com/xdshard/xdshard/snapshot/model"
)

// Limits bound what reading a directory may cost. Zero fields take the
// defaults.
type Limits struct {
	// FileBytes is the largest manifest file read; a larger one is a
	// diagnostic and keeps its last good objects. Default 8 MiB.
	FileBytes int64
	// DocumentBytes bounds one document as decoded, its YAML aliases
	// expanded. Default 2 MiB.
	DocumentBytes int64
	// FileExpandedBytes bounds what the documents of one file that hold
	// YAML aliases add up to once expanded; a file over it is a
	// diagnostic and keeps its last good objects. It is measured before
	// anything is expanded, so it bounds what one write may cost to
	// decode. A file without aliases never reaches it. Default 4 x
	// FileBytes (32 MiB).
	FileExpandedBytes int64
	// ReadTimeout bounds reading one file. Default 10 s.
	ReadTimeout time.Duration
	// Settle is how long a file written in place must be left alone
	// before it is decoded: one modified more recently (by its
	// modification time, and while watching by the watcher's events) is
	// looked at again later, so a writer that truncates a file and pauses
	// mid-file is not read half-written. A file renamed into place is
	// whole and does not wait. 0 decodes at once (for one-shot reads of a
	// tree nobody writes); a Source takes DefaultSettle (2 s).
	Settle time.Duration
}

func (l Limits) withDefaults() Limits {
	if l.FileBytes <= 0 {
		l.FileBytes = 8 << 20
	}
	if l.DocumentBytes <= 0 {
		l.DocumentBytes = 2 << 20
	}
	if l.FileExpandedBytes <= 0 {
		l.FileExpandedBytes = 4 * l.FileBytes
	}
	if l.ReadTimeout <= 0 {
		l.ReadTimeout = 10 * time.Second
	}
	return l
}

// tree is what a directory source knows of its directory: per file, what
// was last read from it, and which file's copy of each object is served.
// It is owned by one goroutine.
//
// Resolving is incremental: a scan touches the keys of the files it read
// again (or found gone), and only those keys, and the diagnostics of only
// the files that claim them, are worked out again.
type tree struct {
	limits Limits
	files  map[string]*fileState       // by slash path relative to the root
	owner  map[model.Key]string        // the file whose copy of the key is served: the first by path
	served map[model.Key]*model.Object // what the model has
	diags  map[string][]snapshot.Diagnostic
	now    func() time.Time
	// workers is how many files are decoded at once (read.go): the
	// cores, GOMAXPROCS.
	workers int
	// touchAll resolves again every key of a file read again, not only
	// those whose object changed (read.go): the reference FuzzTree
	// checks the tree against.
	touchAll bool

	claims  map[model.Key][]string                       // key -> the files defining it, by path
	dups    map[string]map[model.Key]snapshot.Diagnostic // file -> its ignored second definitions
	touched map[model.Key]bool                           // keys whose claims changed since resolve
	redo    map[string]bool                              // paths whose diagnostics must be worked out again
	extra   map[string][]snapshot.Diagnostic             // unreadable folders, as of the last full scan
}

// fileState is one manifest file as last read.
type fileState struct {
	size  int64
	mtime time.Time
	read  bool                        // decoded at size and mtime
	objs  map[model.Key]*model.Object // the good objects it defines, in file order
	order []model.Key                 // objs' keys in file order
	hash  map[model.Key]string        // per object, its document's content hash
	diags []snapshot.Diagnostic       // from decoding
	docs  docCache                    // each document's decoding, reused while its bytes stay
	warn  *snapshot.Diagnostic        // why its last read failed; its objects are the last good ones
	// wholeSize and wholeMtime are the version last known whole (renamed
	// into place), which need not settle however it is looked at again.
	wholeSize  int64
	wholeMtime time.Time
}

func newTree(limits Limits) *tree {
	return &tree{limits: limits.withDefaults(), files: map[string]*fileState{}, owner: map[model.Key]string{},
		served: map[model.Key]*model.Object{}, diags: map[string][]snapshot.Diagnostic{}, now: time.Now, workers: runtime.GOMAXPROCS(0),
		claims: map[model.Key][]string{}, dups: map[string]map[model.Key]snapshot.Diagnostic{},
		touched: map[model.Key]bool{}, redo: map[string]bool{}, extra: map[string][]snapshot.Diagnostic{}}
}

// setKeys records that file p now defines keys (nil: p is gone): every key
// it defined or defines is touched, and p's diagnostics are redone.
func (t *tree) setKeys(p string, old, keys []model.Key) {
	t.redo[p] = true
	for _, k := range old {
		t.touched[k] = true
		if i := slices.Index(t.claims[k], p); i >= 0 {
			t.claims[k] = slices.Delete(t.claims[k], i, i+1)
		}
		if len(t.claims[k]) == 0 {
			delete(t.claims, k)
		}
		delete(t.dups[p], k)
	}
	for _, k := range keys {
		t.touched[k] = true
		if i, found := slices.BinarySearch(t.claims[k], p); !found {
			t.claims[k] = slices.Insert(t.claims[k], i, p)
		}
	}
}

// forget drops file p: its objects stop being defined by it.
func (t *tree) forget(p string) {
	if st := t.files[p]; st != nil {
		t.setKeys(p, st.order, nil)
		delete(t.files, p)
		delete(t.dups, p)
	}
}

// errRootGone is returned by scan when the root cannot be read at all:
// nothing changes, and what was read keeps serving.
var errRootGone = errors.New("config dir cannot be read")

// scan reads fsys again and returns what changed since the last scan:
// object changes, and the diagnostics of every file whose diagnostics
// changed (nil clears them). retry lists the files being written, to be
// read again after Settle.
func (t *tree) scan(ctx context.Context, fsys fs.FS) (ev model.Event, retry []string, err error) {
	present, err := t.sweep(fsys)
	if err != nil {
		return model.Event{}, nil, err
	}
	if retry, err = t.refreshAll(ctx, fsys, present, nil); err != nil {
		return model.Event{}, nil, err
	}
	return t.resolve(), retry, nil
}

// sweep lists the manifest files below the root, forgets those gone and
// records the folders that cannot be read; it returns the files there,
// to be looked at. A file that is gone is deleted, unless it sits in a
// folder that could not be read (then nothing is known of it, and it
// keeps serving).
func (t *tree) sweep(fsys fs.FS) (present []string, err error) {
	present, unreadable, err := t.walk(fsys)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, p := range present {
		seen[p] = true
	}
	for p := range t.files {
		if !seen[p] && !under(p, unreadable) {
			t.forget(p)
		}
	}
	for d := range t.extra {
		t.redo[d] = true
	}
	t.extra = map[string][]snapshot.Diagnostic{}
	for _, d := range unreadable {
		t.extra[d] = []snapshot.Diagnostic{{Severity: snapshot.SeverityError, Origin: d,
			Message: "folder cannot be read; the objects of its files are kept as last read; fix its permissions"}}
		t.redo[d] = true
	}
	return present, nil
}

// scanPaths reads again only the files at paths (named by the file
// watcher), forgetting those that are gone; complete says which of them
// arrived whole (renamed into place), so they need not settle. retry
// lists the files being written, to be read again later.
func (t *tree) scanPaths(ctx context.Context, fsys fs.FS, paths []string, complete map[string]bool) (ev model.Event, retry []string, err error) {
	there, err := t.prune(fsys, paths)
	if err != nil {
		return model.Event{}, nil, err
	}
	if retry, err = t.refreshAll(ctx, fsys, there, complete); err != nil {
		return model.Event{}, nil, err
	}
	return t.resolve(), retry, nil
}

// prune forgets the files of paths that are gone and returns the others.
func (t *tree) prune(fsys fs.FS, paths []string) (there []string, err error) {
	if _, err := fs.Stat(fsys, "."); err != nil {
		return nil, fmt.Errorf("%w: %v", errRootGone, err)
	}
	for _, p := range paths {
		// Gone is the entry itself gone: a link to nothing is a file that
		// cannot be read, and keeps its objects.
		if _, err := fs.Lstat(fsys, p); errors.Is(err, fs.ErrNotExist) {
			t.forget(p)
			continue
		}
		there = append(there, p)
	}
	return there, nil
}

// walk lists the manifest files below the root and the folders that could
// not be read. Only the root's own failure is an error.
func (t *tree) walk(fsys fs.FS) (files, unreadable []string, err error) {
	if _, err := fs.Stat(fsys, "."); err != nil {
		return nil, nil, fmt.Errorf("%w: %v", errRootGone, err)
	}
	err = fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == "." {
				return err
			}
			unreadable = append(unreadable, p)
			if d != nil && d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if p != "." && strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if !d.IsDir() && isManifest(d.Name()) {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", errRootGone, err)
	}
	slices.Sort(files)
	return files, unreadable, nil
}

func under(p string, dirs []string) bool {
	for _, d := range dirs {
		if p == d || strings.HasPrefix(p, d+"/") {
			return true
		}
	}
	return false
}

// replace replaces st's objects by those decoded. A document that names
// an object but no longer decodes keeps that object's last good copy.
func (t *tree) replace(st *fileState, decoded []Decoded) {
	objs, hash, order := map[model.Key]*model.Object{}, map[model.Key]string{}, []model.Key(nil)
	st.diags = nil
	for _, d := range decoded {
		if d.Diag != nil {
			st.diags = append(st.diags, *d.Diag)
		}
		var o *model.Object
		switch {
		case d.Object != nil:
			o, hash[d.Object.Key] = d.Object, d.Hash
		case d.Key != nil && st.objs[*d.Key] != nil:
			o, hash[*d.Key] = st.objs[*d.Key], st.hash[*d.Key] // its last good copy
		}
		if o == nil {
			continue
		}
		if _, dup := objs[o.Key]; dup {
			st.diags = append(st.diags, model.Reject(o, fmt.Sprintf("defined twice in this file: first at %s; delete one (the first is kept)", objs[o.Key].Origin)))
			continue
		}
		objs[o.Key] = o
		order = append(order, o.Key)
	}
	st.objs, st.hash, st.order = objs, hash, order
}

// resolve decides, for every touched key, whose copy is served: always the
// one in the file first by path (byte order of the slash path). Another
// copy is rejected with a diagnostic naming both places. The rule depends
// on what the files hold alone, never on the order they arrived in, so
// what is served live is what a restart, and `xdshard check`, read from
// the same directory: a file added that sorts first takes the object over
// at once, with a diagnostic on the file that served it, rather than at
// the next restart. It returns the changes to what is served and the
// diagnostics that changed.
func (t *tree) resolve() model.Event {
	ev := model.Event{Diagnostics: map[string][]snapshot.Diagnostic{}}
	keys := slices.SortedFunc(maps.Keys(t.touched), compareKeys)
	clear(t.touched)
	for _, k := range keys {
		files := t.claims[k]
		if len(files) == 0 {
			delete(t.owner, k)
			if _, ok := t.served[k]; ok {
				delete(t.served, k)
				ev.Changes = append(ev.Changes, model.Change{Key: k})
			}
			continue
		}
		owner := files[0] // claims are sorted by path
		t.owner[k] = owner
		first := t.files[owner].objs[k]
		if t.served[k] != first {
			t.served[k] = first
			ev.Changes = append(ev.Changes, model.Change{Key: k, Object: first})
		}
		for _, p := range files {
			t.redo[p] = true
			if p == owner {
				delete(t.dups[p], k)
				continue
			}
			if t.dups[p] == nil {
				t.dups[p] = map[model.Key]snapshot.Diagnostic{}
			}
			t.dups[p][k] = model.Reject(t.files[p].objs[k], fmt.Sprintf("defined twice: the copy at %s is served (of two copies, the one in the file first by path is); this one is ignored; delete or rename one of them", first.Origin))
		}
	}
	for p := range t.redo {
		var d []snapshot.Diagnostic
		d = append(d, t.extra[p]...)
		if st := t.files[p]; st != nil {
			if st.warn != nil {
				d = append(d, *st.warn)
			}
			d = append(d, st.diags...)
			for _, k := range slices.SortedFunc(maps.Keys(t.dups[p]), compareKeys) {
				d = append(d, t.dups[p][k])
			}
		}
		if !slices.Equal(d, t.diags[p]) {
			ev.Diagnostics[p] = d
		}
		if len(d) == 0 {
			delete(t.diags, p)
		} else {
			t.diags[p] = d
		}
	}
	clear(t.redo)
	return ev
}

// compareKeys orders keys by kind, namespace and name.
func compareKeys(a, b model.Key) int {
	if c := strings.Compare(string(a.Kind), string(b.Kind)); c != 0 {
		return c
	}
	if c := strings.Compare(a.Namespace, b.Namespace); c != 0 {
		return c
	}
	return strings.Compare(a.Name, b.Name)
}

// objects lists what is served, in file order.
func (t *tree) objects() []*model.Object {
	var out []*model.Object
	for _, p := range slices.Sorted(maps.Keys(t.files)) {
		for _, k := range t.files[p].order {
			if t.owner[k] == p {
				out = append(out, t.served[k])
			}
		}
	}
	return out
}

// readFile reads p whole, bounded in size and time. A read that outlives
// its time is abandoned (its goroutine ends when the read does).
func readFile(ctx context.Context, fsys fs.FS, p string, l Limits) ([]byte, error) {
	type result struct {
		data []byte
		err  error
	}
	done := make(chan result, 1)
	go func() {
		f, err := fsys.Open(p)
		if err != nil {
			done <- result{nil, err}
			return
		}
		defer f.Close()
		data, err := readSized(f, l.FileBytes+1)
		if err == nil && int64(len(data)) > l.FileBytes {
			err = fmt.Errorf("grew past %d bytes while being read", l.FileBytes)
		}
		done <- result{data, err}
	}()
	timer := time.NewTimer(l.ReadTimeout)
	defer timer.Stop()
	select {
	case r := <-done:
		return r.data, r.err
	case <-timer.C:
		return nil, fmt.Errorf("reading took longer than %s", l.ReadTimeout)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// readSized reads f to its end, at most limit bytes, into a buffer of the
// size the file says it has (io.ReadAll grows one from 512 bytes, copying
// and clearing it some twenty times for a megabyte: a tenth of a
// file-driven change's CPU in a profile). A file that grows meanwhile is
// still read whole, up to limit.
func readSized(f fs.File, limit int64) ([]byte, error) {
	size := int64(512)
	if st, err := f.Stat(); err == nil && st.Mode().IsRegular() && st.Size() > 0 {
		size = st.Size() + 1 // one more, to see the end without growing
	}
	buf := make([]byte, 0, min(size, limit))
	r := io.LimitReader(f, limit)
	for {
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, len(buf)) // grew since the Stat, or no size: double
		}
	}
}

func isManifest(name string) bool {
	ext := path.Ext(name)
	return ext == ".yaml" || ext == ".yml"
}
