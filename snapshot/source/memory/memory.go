package memory

import (
	"context"

	"github.com/xdshard/xdshard/snapshot/model"
)

// Source reports its initial objects as the full state, then each batch of
// changes passed to Apply, in order.
type Source struct {
	initial []*model.Object
	changes chan batch
}

type batch struct {
	changes []model.Change
	done    chan struct{}
}

var _ model.Source = (*Source)(nil)

// New returns a source whose initial state is objs.
func New(objs []*model.Object) *Source {
	return &Source{initial: objs, changes: make(chan batch)}
}

// Run implements model.Source.
func (s *Source) Run(ctx context.Context, sink func(model.Event)) error {
	sink(model.Event{Changes: model.Adds(s.initial), Synced: true})
	for {
		select {
		case <-ctx.Done():
			return nil
		case b := <-s.changes:
			sink(model.Event{Changes: b.changes})
			close(b.done)
		}
	}
}

// Apply hands changes to the pipeline and returns once the pipeline has
// taken them (the builder has them scheduled), so a caller can time what
// follows from that moment.
func (s *Source) Apply(ctx context.Context, changes []model.Change) error {
	b := batch{changes: changes, done: make(chan struct{})}
	select {
	case s.changes <- b:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-b.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
