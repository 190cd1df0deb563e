package model

import (
	"context"
	"time"

	"github.com/xdshard/xdshard/snapshot"
)

// Event is what a source reports: object changes, and the diagnostics of
// each of its inputs (keyed by input, e.g. a file name; an entry replaces
// that input's earlier diagnostics, an empty one clears them).
type Event struct {
	Changes     []Change
	Diagnostics map[string][]snapshot.Diagnostic
	// Synced is true on the event that completes the source's initial
	// state; readiness waits for it.
	Synced bool
	// Seen, when set, is when the source first noticed these changes (a
	// file watcher's first event): the time from it to the event is the
	// source's own share of a push (reading, decoding), the "source" stage.
	Seen time.Time
}

// Source feeds the mesh. Run reports the full initial state first, then
// changes, until ctx ends. sink is called from one goroutine at a time.
type Source interface {
	Run(ctx context.Context, sink func(Event)) error
}

// SourceFunc adapts a function to Source.
type SourceFunc func(ctx context.Context, sink func(Event)) error

// Run calls f.
func (f SourceFunc) Run(ctx context.Context, sink func(Event)) error { return f(ctx, sink) }

var _ Source = SourceFunc(nil)
