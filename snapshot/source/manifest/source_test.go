package manifest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xdshard/xdshard/snapshot/model"
)

const svcYAML = `apiVersion: v1
kind: Service
metadata:
  name: %s
  namespace: shop
spec:
  ports: [{name: http, port: %d}]
`

func write(t *testing.T, path, format string, args ...any) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	// Write then rename, as editors and kubectl-style tools do.
	tmp := path + ".tmp~"
	if err := os.WriteFile(tmp, []byte(fmt.Sprintf(format, args...)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func startSource(t *testing.T, dir string) <-chan model.Event {
	t.Helper()
	events := make(chan model.Event, 16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	s := NewSource(dir, nil)
	s.Limits.Settle = 50 * time.Millisecond // these tests rename files into place, which does not wait
	go func() { done <- s.Run(ctx, func(e model.Event) { events <- e }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return events
}

func next(t *testing.T, events <-chan model.Event) model.Event {
	t.Helper()
	select {
	case e := <-events:
		return e
	case <-time.After(time.Minute):
		t.Fatal("no event within a minute (hang check)")
		return model.Event{}
	}
}

// nextChange skips events that carry only diagnostics.
func nextChange(t *testing.T, events <-chan model.Event) model.Change {
	t.Helper()
	for {
		e := next(t, events)
		if len(e.Changes) == 1 {
			return e.Changes[0]
		}
		if len(e.Changes) > 1 {
			t.Fatalf("want one change, got %+v", e.Changes)
		}
	}
}

func TestSourceFollowsEdits(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "web.yaml"), svcYAML, "web", 80)
	events := startSource(t, dir)

	first := next(t, events)
	if !first.Synced || len(first.Changes) != 1 {
		t.Fatalf("initial event %+v, want synced with one object", first)
	}

	write(t, filepath.Join(dir, "web.yaml"), svcYAML, "web", 8080)
	if c := nextChange(t, events); c.Object == nil || c.Key.Name != "web" {
		t.Fatalf("edit: got %+v, want an update of web", c)
	}

	write(t, filepath.Join(dir, "sub", "api.yaml"), svcYAML, "api", 80)
	if c := nextChange(t, events); c.Object == nil || c.Key.Name != "api" {
		t.Fatalf("new file in a new folder: got %+v, want api added", c)
	}

	// A broken edit keeps the last good object: a diagnostic, no deletion.
	write(t, filepath.Join(dir, "web.yaml"), strings.Replace(svcYAML, "port: %d", "port: eighty", 1), "web")
	e := next(t, events)
	for _, c := range e.Changes {
		if c.Key.Name == "web" {
			t.Fatalf("broken edit changed web: %+v", c)
		}
	}
	if len(e.Diagnostics["web.yaml"]) == 0 {
		t.Fatalf("broken edit: no diagnostic for web.yaml in %+v", e.Diagnostics)
	}

	if err := os.Remove(filepath.Join(dir, "sub", "api.yaml")); err != nil {
		t.Fatal(err)
	}
	if c := nextChange(t, events); c.Object != nil || c.Key.Name != "api" {
		t.Fatalf("delete: got %+v, want api deleted", c)
	}
}
