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
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/xdshard/xdshard/snapshot"
	"github.com/xdshard/xdshard/snapshot/model"
)

// Source serves a manifest directory as a model.Source and follows edits
// to it. The file watcher names the files that changed: only those are
// looked at again, and read only if their size or modification time
// changed; a file renamed into place (how editors, kubectl and atomic
// writers save) is whole and read at once, one written in place is read
// once it settled. The whole directory is looked at when a folder or a
// hidden entry changes (a ConfigMap mount swaps its hidden ..data link),
// and every Resync, which catches what events miss (a directory removed
// and created again).
//
// What it promises: a file that cannot be read, is not a regular file, or
// is too large keeps its last good objects, with a diagnostic; a document
// that stops decoding keeps its object's last good copy; a folder that
// cannot be read keeps its files' objects; a directory that goes away keeps
// everything; a file is decoded only once nobody has written it for Settle;
// an object defined twice is served from the file that served it first.
type Source struct {
	dir    string
	log    *slog.Logger
	Limits Limits
	// Resync is how often the whole directory is looked at, events or not.
	Resync time.Duration
}

var _ model.Source = (*Source)(nil)

// NewSource watches dir.
func NewSource(dir string, logger *slog.Logger) *Source {
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Source{dir: dir, log: logger, Limits: Limits{Settle: 50 * time.Millisecond}, Resync: 5 * time.Second}
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
// read at all, Run fails (there is nothing to serve).
func (s *Source) Run(ctx context.Context, sink func(model.Event)) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watching %s: %w", s.dir, err)
	}
	defer w.Close()
	fsys := os.DirFS(s.dir)
	t := newTree(s.Limits)
	s.watchTree(w)
	first, err := s.firstScan(ctx, t, fsys)
	if err != nil || ctx.Err() != nil {
		return err
	}
	first.Synced = true
	s.log.Info("config dir read", "dir", s.dir, "files", len(t.files), "objects", len(t.served), "took", first.took.Round(time.Millisecond))
	sink(first.Event)
	settle := time.NewTimer(time.Hour)
	settle.Stop()
	resync := time.NewTicker(s.resync())
	defer resync.Stop()
	rootDown := false // a diagnostic says the directory cannot be read
	var c changed
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-w.Errors:
			s.log.Warn("file watch error; the directory is read again every resync", "dir", s.dir, "err", err)
			c.full = true
			settle.Reset(s.settle())
		case ev := <-w.Events:
			if c.note(s.dir, ev, time.Now()) {
				s.watchTree(w)
			}
			if c.allWhole() {
				settle.Reset(time.Millisecond) // gather the rest of the burst, no more
			} else {
				settle.Reset(s.settle())
			}
		case <-resync.C:
			s.watchTree(w) // the directory may have been created again
			c.full = true
			settle.Reset(0)
		case <-settle.C:
			start := time.Now()
			var ev model.Event
			var retry bool
			var err error
			if c.full {
				ev, retry, err = t.scan(ctx, fsys)
			} else {
				ev, retry, err = t.scanPaths(ctx, fsys, c.sorted(), c.whole)
			}
			ev.Seen = c.first
			if retry {
				settle.Reset(s.settle()) // the same files again, once they settled
			} else {
				c = changed{}
			}
			if err != nil {
				if ctx.Err() == nil && !rootDown {
					rootDown = true
					s.log.Warn("config dir cannot be read; keeping the last config", "dir", s.dir, "err", err)
					sink(model.Event{Diagnostics: map[string][]snapshot.Diagnostic{s.dir: {{Severity: snapshot.SeverityError, Origin: s.dir,
						Message: fmt.Sprintf("the config folder cannot be read (%v); every object read from it keeps serving; it is read again when it comes back", err)}}}})
				}
				continue
			}
			if rootDown {
				rootDown = false
				ev.Diagnostics[s.dir] = nil
			}
			if len(ev.Changes) > 0 || len(ev.Diagnostics) > 0 {
				s.log.Info("config dir reloaded", "dir", s.dir, "files", len(t.files), "objects", len(t.served), "changed", len(ev.Changes), "files with new diagnostics", len(ev.Diagnostics), "took", time.Since(start).Round(time.Millisecond))
				sink(ev)
			}
		}
	}
}

// changed is what the file watcher said since the last scan: the files
// named, which of them arrived whole, and whether the whole directory
// must be looked at.
type changed struct {
	first      time.Time // the first event since the last scan
	paths      map[string]bool
	whole      map[string]bool // renamed into place, not written since
	full       bool
	lastRename time.Time
}

// renameWindow is how soon after a rename's source event its target's
// event comes (the kernel reports both at once).
const renameWindow = 50 * time.Millisecond

// note records one event and says whether a directory was created (to be
// watched).
func (c *changed) note(dir string, ev fsnotify.Event, now time.Time) (newDir bool) {
	if c.paths == nil {
		c.paths, c.whole = map[string]bool{}, map[string]bool{}
	}
	if c.first.IsZero() {
		c.first = now
	}
	if ev.Has(fsnotify.Rename) {
		c.lastRename = now
	}
	rel, err := filepath.Rel(dir, ev.Name)
	if err != nil || rel == "." || strings.HasPrefix(rel, "..") {
		c.full = true
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
			c.full = true
			return !hidden
		}
	}
	switch {
	case hidden:
		// A ConfigMap mount swaps a hidden ..data link: the visible
		// files change through it without events of their own.
		c.full = true
	case !isManifest(rel):
		// A writer's temporary file; a directory removed or renamed is
		// not known to be one, so look at everything.
		if ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Chmod) || (ev.Has(fsnotify.Rename) && path.Ext(rel) == "") {
			c.full = true
		}
	default:
		c.paths[rel] = true
		switch {
		case ev.Has(fsnotify.Create):
			c.whole[rel] = now.Sub(c.lastRename) < renameWindow
		case ev.Has(fsnotify.Write):
			c.whole[rel] = false
		}
	}
	return false
}

// allWhole says whether every file named so far arrived whole.
func (c *changed) allWhole() bool {
	if c.full {
		return false
	}
	for p := range c.paths {
		if !c.whole[p] {
			return false
		}
	}
	return len(c.paths) > 0
}

func (c *changed) sorted() []string { return slices.Sorted(maps.Keys(c.paths)) }

type scanned struct {
	model.Event
	took time.Duration
}

// firstScan reads the directory until no file is being written, so the
// first state is whole.
func (s *Source) firstScan(ctx context.Context, t *tree, fsys fs.FS) (scanned, error) {
	start := time.Now()
	ev, retry, err := t.scan(ctx, fsys)
	for err == nil && retry && ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-time.After(s.settle()):
		}
		var more model.Event
		more, retry, err = t.scan(ctx, fsys)
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
	return 50 * time.Millisecond
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
