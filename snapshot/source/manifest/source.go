package manifest

import (
	"context"
	"errors"
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
// settled for Settle, then the directory is read again and only what
// changed is reported.
type Source struct {
	dir    string
	log    *slog.Logger
	Settle time.Duration
}

var _ model.Source = (*Source)(nil)

// NewSource watches dir.
func NewSource(dir string, logger *slog.Logger) *Source {
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Source{dir: dir, log: logger, Settle: 50 * time.Millisecond}
}

// StaticSource reports the manifests of fsys once and never changes, as
// for the embedded demo.
func StaticSource(fsys fs.FS) model.Source {
	return model.SourceFunc(func(ctx context.Context, sink func(model.Event)) error {
		r, err := LoadFS(fsys)
		if err != nil {
			return err
		}
		sink(initialEvent(r))
		<-ctx.Done()
		return nil
	})
}

func initialEvent(r *Result) model.Event {
	return model.Event{Changes: model.Adds(r.Objects), Diagnostics: r.Diagnostics, Synced: true}
}

// Run reports the directory, then its changes, until ctx ends. If the
// directory disappears, what was read stays in place (a source going away
// never deletes config) and reading resumes when it comes back.
func (s *Source) Run(ctx context.Context, sink func(model.Event)) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watching %s: %w", s.dir, err)
	}
	defer w.Close()
	cur, err := Load(s.dir)
	if err != nil {
		return err
	}
	if err := s.watchTree(w); err != nil {
		return err
	}
	sink(initialEvent(cur))
	settle := time.NewTimer(time.Hour)
	settle.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-w.Errors:
			s.log.Warn("file watch error", "dir", s.dir, "err", err)
		case ev := <-w.Events:
			if ev.Has(fsnotify.Create) {
				if st, err := os.Stat(ev.Name); err == nil && st.IsDir() {
					_ = s.watchTree(w)
				}
			}
			settle.Reset(s.Settle)
		case <-settle.C:
			next, err := Load(s.dir)
			if err != nil {
				s.log.Warn("config dir unreadable; keeping the last config", "err", err)
				continue
			}
			_ = s.watchTree(w) // the dir may have been recreated
			ev := diff(cur, next)
			cur = next
			if len(ev.Changes) > 0 || len(ev.Diagnostics) > 0 {
				sink(ev)
			}
		}
	}
}

// watchTree adds every non-hidden directory below s.dir to w (fsnotify is
// not recursive).
func (s *Source) watchTree(w *fsnotify.Watcher) error {
	return filepath.WalkDir(s.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if !d.IsDir() {
			return nil
		}
		if p != s.dir && strings.HasPrefix(d.Name(), ".") {
			return fs.SkipDir
		}
		if err := w.Add(p); err != nil {
			return fmt.Errorf("watching %s: %w", p, err)
		}
		return nil
	})
}

// diff reports what changed from prev to next. An object whose document is
// still present but no longer decodes is kept (not deleted) and carried
// into next, so the last good config keeps serving.
func diff(prev, next *Result) model.Event {
	ev := model.Event{Diagnostics: map[string][]snapshot.Diagnostic{}}
	prevByKey := make(map[model.Key]*model.Object, len(prev.Objects))
	for _, o := range prev.Objects {
		prevByKey[o.Key] = o
	}
	nextKeys := make(map[model.Key]bool, len(next.Objects))
	for _, o := range next.Objects {
		nextKeys[o.Key] = true
		if old, ok := prevByKey[o.Key]; ok && prev.hashes[o.Key] == next.hashes[o.Key] && old.Origin == o.Origin {
			continue
		}
		ev.Changes = append(ev.Changes, model.Change{Key: o.Key, Object: o})
	}
	for _, o := range prev.Objects {
		if nextKeys[o.Key] {
			continue
		}
		if next.failed[o.Key] {
			next.Objects = append(next.Objects, o)
			next.hashes[o.Key] = prev.hashes[o.Key]
			continue
		}
		ev.Changes = append(ev.Changes, model.Change{Key: o.Key})
	}
	for f, d := range next.Diagnostics {
		ev.Diagnostics[f] = d
	}
	for f := range prev.Diagnostics {
		if _, still := next.Diagnostics[f]; !still {
			ev.Diagnostics[f] = nil
		}
	}
	return ev
}
