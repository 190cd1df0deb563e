package manifest

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/xdshard/xdshard/snapshot"
	"github.com/xdshard/xdshard/snapshot/model"
)

// Source serves a manifest directory as a model.Source and follows edits
// to it. The file watcher names the files that changed: only those are
// looked at again, and read only if their size or modification time
// changed. A file renamed into place (how editors, kubectl and atomic
// writers save) is whole and read at once; one written in place is read
// once nobody has written it for Settle (2 s): a writer that truncates a
// file and pauses is not read half-written. The whole directory is looked
// at when a folder or a hidden entry changes (a ConfigMap mount swaps its
// hidden ..data link), and every Resync, which catches what events miss
// (a directory removed and created again).
//
// Files are read and decoded off the loop that follows the watcher, each
// on its own goroutine, and each file's result is reported as soon as it
// is decoded: a file slow to decode holds up no other file's change. A
// file changed again while it is decoded has that decoding dropped, so
// its results arrive in the order it was written.
//
// What it promises: a file that cannot be read, is not a regular file, or
// is too large (in bytes, or once its YAML aliases are expanded) keeps its
// last good objects, with a diagnostic; a document that stops decoding
// keeps its object's last good copy; a folder that cannot be read keeps
// its files' objects; a directory that goes away keeps everything; an
// object defined twice is served from the file first by path, live as on
// a restart.
type Source struct {
	dir    string
	log    *slog.Logger
	Limits Limits
	// Resync is how often the whole directory is looked at, events or not.
	Resync time.Duration

	mu      sync.Mutex
	applied map[string]stamp // each file's version whose objects the sink has been given
}

// stamp is a version of a file: its size and modification time.
type stamp struct {
	size  int64
	mtime time.Time
}

// Applied says whether the sink has been given what the file at rel (a
// slash path relative to the directory) holds at info's size and
// modification time: a writer that stats the file it wrote knows when
// the source is done with it. A file that fails to decode keeps its last
// good objects; its new version counts as applied once that is decided.
func (s *Source) Applied(rel string, info fs.FileInfo) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.applied[rel]
	return ok && st.size == info.Size() && st.mtime.Equal(info.ModTime())
}

// dropGone forgets what was applied of the files the tree no longer has
// (removed, renamed away), so names that come and go are not kept: those
// of paths, or with paths nil, of every file (after a whole look, which
// costs as much).
func (s *Source) dropGone(t *tree, paths []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if paths == nil {
		for p := range s.applied {
			if t.files[p] == nil {
				delete(s.applied, p)
			}
		}
		return
	}
	for _, p := range paths {
		if t.files[p] == nil {
			delete(s.applied, p)
		}
	}
}

// noteApplied records the files at paths as last read, once the sink has
// been given them.
func (s *Source) noteApplied(t *tree, paths []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.applied == nil {
		s.applied = map[string]stamp{}
	}
	for _, p := range paths {
		if st := t.files[p]; st != nil && st.read {
			s.applied[p] = stamp{st.size, st.mtime}
		} else {
			delete(s.applied, p)
		}
	}
}

var _ model.Source = (*Source)(nil)

// DefaultSettle is how long a file written in place must be left alone
// before it is read: longer than a writer's pause mid-file (a tenant's
// tool that truncated its file and paused 100 ms had 2 of its 6 clusters
// served), short beside how often config changes. A file renamed into
// place does not wait.
const DefaultSettle = 2 * time.Second

// NewSource watches dir.
func NewSource(dir string, logger *slog.Logger) *Source {
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Source{dir: dir, log: logger, Limits: Limits{Settle: DefaultSettle}, Resync: 5 * time.Second}
}

// StaticSource reports the manifests of fsys once and never changes, as
// for the embedded demo.
func StaticSource(fsys fs.FS) model.Source {
	return model.SourceFunc(func(ctx context.Context, sink func(model.Event)) error {
		r, err := LoadFS(fsys)
		if err != nil {
			return err
		}
		sink(model.Event{Changes: model.Adds(r.Objects), Diagnostics: r.Diagnostics, Synced: true})
		<-ctx.Done()
		return nil
	})
}

// Run reports the directory, then its changes, until ctx ends. The first
// read waits for files being written to settle; if the directory cannot be
// read at all, Run fails (there is nothing to serve). It returns as soon
// as ctx ends: a read or decoding under way is abandoned, and stops at its
// next document.
func (s *Source) Run(ctx context.Context, sink func(model.Event)) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watching %s: %w", s.dir, err)
	}
	defer w.Close()
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	fsys := os.DirFS(s.dir)
	t := newTree(s.Limits)
	t.limits.Settle = s.settle()
	s.watchTree(w)
	first, err := s.firstScan(ctx, t, fsys)
	if err != nil || ctx.Err() != nil {
		return err
	}
	first.Synced = true
	s.log.Info("config dir read", "dir", s.dir, "files", len(t.files), "objects", len(t.served), "took", first.took.Round(time.Millisecond))
	sink(first.Event)
	s.noteApplied(t, slices.Collect(maps.Keys(t.files)))
	l := &loop{s: s, t: t, fsys: fsys, ctx: ctx, sink: sink, due: map[string]*want{}, waiting: map[string]*want{},
		inflight: map[string]*pending{}, results: make(chan *pending)}
	l.timer = time.NewTimer(time.Hour)
	defer l.timer.Stop()
	resync := time.NewTicker(s.resync())
	defer resync.Stop()
	for {
		l.arm()
		select {
		case <-ctx.Done():
			return nil
		case err := <-w.Errors:
			s.log.Warn("file watch error; the directory is read again every resync", "dir", s.dir, "err", err)
			l.wantAll(time.Now(), burstFull)
		case ev := <-w.Events:
			if l.take(ev, w.Events) {
				s.watchTree(w)
			}
		case <-resync.C:
			s.watchTree(w) // the directory may have been created again
			l.wantAll(time.Now(), 0)
		case <-l.timer.C:
			l.look(time.Now())
		case job := <-l.results:
			l.finish(job, time.Now())
		}
	}
}

const (
	// burst is how long after a file renamed into place, removed or
	// renamed away it is looked at: the rest of the burst of events is
	// gathered, no more.
	burst = time.Millisecond
	// burstFull is how long after a folder or a hidden entry changed the
	// whole directory is looked at, gathering the burst (a tree copied in).
	burstFull = 50 * time.Millisecond
	// renameWindow is how long after a rename's source event its target's
	// event is waited for (the kernel reports both at once; a file renamed
	// out of the tree has no target event).
	renameWindow = 50 * time.Millisecond
)

// want is a file (or the whole directory) to be looked at.
type want struct {
	at    time.Time // when
	whole bool      // renamed into place, not written since
	seen  time.Time // the first event since it was last looked at
}

// loop is Run's state after the first read. It is owned by Run's
// goroutine; the files being read and decoded are each on a goroutine of
// their own, which touches nothing of it and reports on results.
type loop struct {
	s    *Source
	t    *tree
	fsys fs.FS
	ctx  context.Context
	sink func(model.Event)

	timer    *time.Timer
	due      map[string]*want // files to look at
	full     *want            // the whole directory to look at, or nil
	rootDown bool             // a diagnostic says the directory cannot be read

	inflight map[string]*pending // the file's read and decoding under way
	held     int64               // the bytes of the files in flight
	waiting  map[string]*want    // looked at while batchBytes were in flight
	results  chan *pending
}

// arm sets the timer to the first thing due.
func (l *loop) arm() {
	var first time.Time
	for _, w := range l.due {
		if first.IsZero() || w.at.Before(first) {
			first = w.at
		}
	}
	if l.full != nil && (first.IsZero() || l.full.at.Before(first)) {
		first = l.full.at
	}
	if first.IsZero() {
		l.timer.Stop()
		return
	}
	l.timer.Reset(max(time.Until(first), 0))
}

// wantAll asks for the whole directory to be looked at after delay.
func (l *loop) wantAll(now time.Time, delay time.Duration) {
	if l.full == nil {
		l.full = &want{at: now.Add(delay), seen: now}
	} else if at := now.Add(delay); at.Before(l.full.at) {
		l.full.at = at
	}
}

// How a file's event moves when it is looked at.
type wantKind int

const (
	renamedIn wantKind = iota // whole: at once
	written                   // written in place: once left alone for Settle
	touched                   // removed, renamed away, attributes: at once; its stat says the rest
)

func (l *loop) want(p string, now time.Time, kind wantKind) {
	w := l.due[p]
	if w == nil {
		w = l.waiting[p]
		delete(l.waiting, p)
	}
	if w == nil {
		w = &want{seen: now, at: now.Add(burst)}
		if kind == written {
			w.at = time.Time{} // set below
		}
	}
	l.due[p] = w
	switch kind {
	case renamedIn:
		w.whole, w.at = true, now.Add(burst)
	case written:
		w.whole = false
		if at := now.Add(l.t.limits.Settle); at.After(w.at) {
			w.at = at
		}
	case touched:
		if at := now.Add(burst); at.Before(w.at) {
			w.at = at
		}
	}
}

// take records ev and, after a rename's source event, the event that
// follows it (its target's, which the kernel reports with it), and says
// whether a directory was created (to be watched). The two are paired by
// order, not by the clock: the loop may be busy for longer than
// renameWindow between receiving them (applying a decoded file, a build
// taking its change), and a target taken for a file written in place
// waited Settle (2 s) to be read.
func (l *loop) take(ev fsnotify.Event, events <-chan fsnotify.Event) (newDir bool) {
	var wait *time.Timer
	defer func() {
		if wait != nil {
			wait.Stop()
		}
	}()
	renamedFrom := ""
	for {
		newDir = l.note(ev, time.Now(), renamedFrom) || newDir
		if !ev.Has(fsnotify.Rename) {
			return newDir
		}
		renamedFrom = ev.Name
		if wait == nil {
			wait = time.NewTimer(renameWindow)
		} else {
			wait.Reset(renameWindow)
		}
		var ok bool
		select {
		case ev, ok = <-events:
			if !ok {
				return newDir
			}
		case <-wait.C:
			return newDir
		}
	}
}

// note records one event and says whether a directory was created (to be
// watched). renamedFrom is the path of the rename's source event ev came
// right after, if it did: a creation in the same folder then is that
// rename's target, whole (a file renamed out of the tree has no target,
// and an unrelated creation after it, elsewhere, is not taken for one).
func (l *loop) note(ev fsnotify.Event, now time.Time, renamedFrom string) (newDir bool) {
	dir := l.s.dir
	rel, err := filepath.Rel(dir, ev.Name)
	if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) { // outside; "..data" is inside
		l.wantAll(now, burstFull)
		return false
	}
	rel = filepath.ToSlash(rel)
	hidden := false
	for _, part := range strings.Split(rel, "/") {
		if strings.HasPrefix(part, ".") {
			hidden = true
		}
	}
	if ev.Has(fsnotify.Create) {
		if st, err := os.Stat(ev.Name); err == nil && st.IsDir() {
			l.wantAll(now, burstFull)
			if rel == "..data" {
				// A ConfigMap mount's swap: the kubelet wrote the new
				// files whole before renaming its ..data link over to
				// them, so what it shows is read at once, not settled.
				l.full.whole = true
			}
			return !hidden
		}
	}
	switch {
	case hidden:
		// A ConfigMap mount swaps a hidden ..data link: the visible
		// files change through it without events of their own.
		l.wantAll(now, burstFull)
	case !isManifest(rel):
		// A writer's temporary file; a directory removed or renamed is
		// not known to be one, so look at everything.
		if ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Chmod) || (ev.Has(fsnotify.Rename) && path.Ext(rel) == "") {
			l.wantAll(now, burstFull)
		}
	case ev.Has(fsnotify.Create) && renamedFrom != "" && filepath.Dir(renamedFrom) == filepath.Dir(ev.Name):
		l.want(rel, now, renamedIn)
	case ev.Has(fsnotify.Create) || ev.Has(fsnotify.Write):
		l.want(rel, now, written)
	default:
		l.want(rel, now, touched)
	}
	return false
}

// look looks at what is due: the whole directory, or the files named. A
// file that changed is read and decoded on a goroutine of its own
// (finish applies it); what looking found at once (files gone, files
// that cannot be read) is reported now.
func (l *loop) look(now time.Time) {
	t := l.t
	var paths []string
	whole := map[string]bool{}
	seen := map[string]time.Time{}
	var err error
	if l.full != nil && !l.full.at.After(now) {
		full := l.full
		l.full = nil
		var present []string
		present, err = t.sweep(l.fsys)
		if err == nil {
			l.s.dropGone(t, nil)
		}
		for _, p := range present {
			if w := l.due[p]; w != nil && w.at.After(now) {
				continue // being written: looked at once it settles
			}
			paths = append(paths, p)
			seen[p] = full.seen
			whole[p] = full.whole
		}
	}
	var named []string
	for p, w := range l.due {
		if !w.at.After(now) {
			delete(l.due, p)
			named = append(named, p)
			whole[p] = w.whole
			if s, ok := seen[p]; !ok || w.seen.Before(s) {
				seen[p] = w.seen
			}
		}
	}
	if err == nil && len(named) > 0 {
		slices.Sort(named)
		var there []string
		there, err = t.prune(l.fsys, named)
		paths = append(paths, there...)
		if err == nil {
			l.s.dropGone(t, named)
		}
	}
	if err != nil {
		if l.ctx.Err() == nil && !l.rootDown {
			l.rootDown = true
			l.s.log.Warn("config dir cannot be read; keeping the last config", "dir", l.s.dir, "err", err)
			l.sink(model.Event{Diagnostics: map[string][]snapshot.Diagnostic{l.s.dir: {{Severity: snapshot.SeverityError, Origin: l.s.dir,
				Message: fmt.Sprintf("the config folder cannot be read (%v); every object read from it keeps serving; it is read again when it comes back", err)}}}})
		}
		return
	}
	// A file forgotten (gone) has its decoding dropped.
	for p, job := range l.inflight {
		if t.files[p] != job.st {
			l.drop(p)
		}
	}
	var first time.Time // the first event answered
	for _, w := range seen {
		if first.IsZero() || w.Before(first) {
			first = w
		}
	}
	for _, p := range slices.Compact(slices.Sorted(slices.Values(paths))) {
		if l.ctx.Err() != nil {
			return
		}
		job, retry := t.look(l.fsys, p, whole[p])
		cur := l.inflight[p]
		if job != nil && cur != nil && cur.info.Size() == job.info.Size() && cur.info.ModTime().Equal(job.info.ModTime()) {
			continue // that version is being decoded
		}
		if cur != nil {
			l.drop(p) // superseded, or the file is back as it was applied
		}
		if retry {
			l.want(p, now, written)
			l.due[p].seen = seen[p]
			continue
		}
		if job == nil {
			continue
		}
		if l.held+job.info.Size() > batchBytes && len(l.inflight) > 0 {
			l.waiting[p] = &want{at: now, whole: whole[p], seen: seen[p]}
			continue
		}
		job.seen, job.start = seen[p], now
		l.start(job)
	}
	ev := t.resolve()
	if l.rootDown {
		l.rootDown = false
		ev.Diagnostics[l.s.dir] = nil
	}
	ev.Seen = first
	l.report(ev, now)
}

// start reads and decodes job on a goroutine of its own.
func (l *loop) start(job *pending) {
	ctx, cancel := context.WithCancel(l.ctx)
	job.cancel = cancel
	l.inflight[job.p] = job
	l.held += job.info.Size()
	limits := l.t.limits
	go func() {
		if job.load(ctx, l.fsys, limits); job.readErr == nil && !job.changed {
			job.decode(ctx, limits)
		}
		select {
		case l.results <- job:
		case <-ctx.Done():
		}
	}()
}

// drop abandons p's read and decoding under way.
func (l *loop) drop(p string) {
	if job := l.inflight[p]; job != nil {
		job.cancel()
		l.held -= job.info.Size()
		delete(l.inflight, p)
	}
}

// finish applies a file read and decoded, with any others done by now,
// and reports what changed.
func (l *loop) finish(job *pending, now time.Time) {
	var done []*pending
	for more := true; more; {
		if l.inflight[job.p] == job { // else superseded: dropped
			job.cancel()
			l.held -= job.info.Size()
			delete(l.inflight, job.p)
			done = append(done, job)
		}
		select {
		case job = <-l.results:
		default:
			more = false
		}
	}
	for p, w := range l.waiting {
		delete(l.waiting, p)
		w.at = now
		l.due[p] = w
	}
	if len(done) == 0 {
		return
	}
	var seen, start time.Time
	for _, job := range done {
		if l.t.files[job.p] != job.st {
			continue // gone meanwhile
		}
		if l.t.apply(job) {
			l.want(job.p, now, written) // changed while read
			l.due[job.p].seen = job.seen
		}
		if seen.IsZero() || job.seen.Before(seen) {
			seen = job.seen
		}
		if start.IsZero() || job.start.Before(start) {
			start = job.start
		}
	}
	ev := l.t.resolve()
	ev.Seen = seen
	l.report(ev, start)
	paths := make([]string, len(done))
	for i, job := range done {
		paths[i] = job.p
	}
	l.s.noteApplied(l.t, paths)
}

// report sends ev if it says anything.
func (l *loop) report(ev model.Event, start time.Time) {
	if len(ev.Changes) > 0 || len(ev.Diagnostics) > 0 {
		t := l.t
		l.s.log.Info("config dir reloaded", "dir", l.s.dir, "files", len(t.files), "objects", len(t.served), "changed", len(ev.Changes), "files with new diagnostics", len(ev.Diagnostics), "took", time.Since(start).Round(time.Millisecond))
		l.sink(ev)
	}
}

type scanned struct {
	model.Event
	took time.Duration
}

// firstScan reads the directory until no file is being written, so the
// first state is whole.
func (s *Source) firstScan(ctx context.Context, t *tree, fsys fs.FS) (scanned, error) {
	start := time.Now()
	ev, retry, err := t.scan(ctx, fsys)
	for err == nil && len(retry) > 0 && ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-time.After(s.settle()):
		}
		var more model.Event
		more, retry, err = t.scanPaths(ctx, fsys, retry, nil)
		ev = merge(ev, more)
	}
	if err != nil && ctx.Err() == nil {
		return scanned{}, fmt.Errorf("config dir %s: %w (pass --config with a readable directory of YAML manifests)", s.dir, err)
	}
	return scanned{ev, time.Since(start)}, nil
}

// merge folds b into a, as if one scan had seen both.
func merge(a, b model.Event) model.Event {
	byKey := map[model.Key]int{}
	for i, c := range a.Changes {
		byKey[c.Key] = i
	}
	for _, c := range b.Changes {
		if i, ok := byKey[c.Key]; ok {
			a.Changes[i] = c
		} else {
			a.Changes = append(a.Changes, c)
		}
	}
	for f, d := range b.Diagnostics {
		a.Diagnostics[f] = d
	}
	return a
}

func (s *Source) settle() time.Duration {
	if s.Limits.Settle > 0 {
		return s.Limits.Settle
	}
	return DefaultSettle
}

func (s *Source) resync() time.Duration {
	if s.Resync > 0 {
		return s.Resync
	}
	return 5 * time.Second
}

// watchTree adds every readable, non-hidden directory below s.dir to w
// (fsnotify is not recursive). What cannot be watched is caught by resync.
func (s *Source) watchTree(w *fsnotify.Watcher) {
	_ = filepath.WalkDir(s.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if !d.IsDir() {
			return nil
		}
		if p != s.dir && strings.HasPrefix(d.Name(), ".") {
			return fs.SkipDir
		}
		_ = w.Add(p)
		return nil
	})
}
