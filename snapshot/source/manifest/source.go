package manifest

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/xdshard/xdshard/snapshot"
	"github.com/xdshard/xdshard/snapshot/model"
)

// Source serves a manifest directory as a model.Source and follows edits
// to it. Each burst of file events (an editor's write-rename-chmod save) is
// settled, then only the files whose size or modification time changed are
// read again; the whole directory is also looked at every Resync, which
// catches what events miss (a directory removed and created again).
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
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-w.Errors:
			s.log.Warn("file watch error; the directory is read again every resync", "dir", s.dir, "err", err)
		case ev := <-w.Events:
			if ev.Has(fsnotify.Create) {
				s.watchTree(w)
			}
			settle.Reset(s.settle())
		case <-resync.C:
			s.watchTree(w) // the directory may have been created again
			settle.Reset(0)
		case <-settle.C:
			start := time.Now()
			ev, retry, err := t.scan(ctx, fsys)
			if retry {
				settle.Reset(s.settle())
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
