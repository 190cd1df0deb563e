package builder

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/xdshard/xdshard/internal/prio"
	"github.com/xdshard/xdshard/snapshot"
	"github.com/xdshard/xdshard/snapshot/model"
)

// BuildFunc turns one tenant's view into its snapshot. It returns an error
// only for a system fault; problems with objects belong in the snapshot's
// diagnostics.
type BuildFunc func(v *model.TenantView) (*snapshot.Snapshot, error)

// Options configure a Builder. Zero values take the defaults.
type Options struct {
	Debounce time.Duration // quiet time after the last change of a tenant; default 100 ms
	MaxDelay time.Duration // longest a tenant's change waits during a burst; default 1 s
	Workers  int           // concurrent tenant builds; default GOMAXPROCS
	Build    BuildFunc     // required
	// BuildEndpoints, when set, builds a tenant whose changes since its
	// last build are all endpoints (EndpointSlices, Pods): a fast lane
	// that must yield what Build would.
	BuildEndpoints BuildFunc
	Logger         *slog.Logger
	// Observe receives stage durations ("debounce", "build", "publish") for
	// the push-stage histograms.
	Observe func(stage string, d time.Duration)
	// OnPublish is told of every published snapshot with the time the
	// oldest change it carries entered the builder.
	OnPublish func(s *snapshot.Snapshot, changedAt time.Time)
	// Owns says whether this replica builds tenant (nil: every tenant).
	// A tenant it does not own is handed to Foreign instead: its snapshot
	// comes from its owner.
	Owns func(tenant string) bool
	// Foreign is told, where a build would have run, of a tenant this
	// replica does not own; gone is true when the tenant no longer exists.
	Foreign func(tenant string, gone bool)
	// OnBuild is told of every build's outcome, after the store has it
	// (published or not): the
	// snapshot, or the error (the last good snapshot then stays); both nil
	// when the tenant no longer exists.
	OnBuild func(tenant string, s *snapshot.Snapshot, err error)
}

// Builder debounces changes per tenant and keeps the store current.
//
// mu guards pending, building and failures; the mesh and the store are
// safe for concurrent use on their own. One goroutine (Run) owns the timer.
// A tenant is built by one goroutine at a time, whichever path asked for
// it (the scheduler or BuildAll): each claims it in building first.
type Builder struct {
	mesh  *model.Mesh
	store *snapshot.Store
	opts  Options
	log   *slog.Logger
	sem   *prio.Sem
	wake  chan struct{}

	mu       sync.Mutex
	pending  map[string]*pending  // tenant -> changes waiting for a build
	changed  map[string]time.Time // tenant -> its last change, for the leading edge
	building map[string]bool      // tenant -> a build is running
	queued   map[string]*queued   // tenant -> its build is dispatched, waiting for a slot
	failures map[string]error     // tenant -> last build error, cleared on success
	released *sync.Cond           // on mu: a tenant left building
	wg       sync.WaitGroup
}

// queued is a dispatched build that has not read the mesh yet: a change
// to its tenant made meanwhile is in what it reads, so it needs no build
// of its own, and a narrower change gives the build its rank.
type queued struct {
	w         *prio.Waiter
	breadth   int
	endpoints bool
}

type pending struct {
	first, last time.Time
	now         bool // leading edge: the tenant was quiet, build at once
	endpoints   bool // every change since the last build is an endpoint
}

// endpointsOnly says whether changes move only endpoints.
func endpointsOnly(changes []model.Change) bool {
	for _, c := range changes {
		if c.Key.Kind != model.KindEndpointSlice && c.Key.Kind != model.KindPod {
			return false
		}
	}
	return true
}

// New returns a Builder publishing mesh's tenants into store.
func New(mesh *model.Mesh, store *snapshot.Store, opts Options) *Builder {
	if opts.Debounce <= 0 {
		opts.Debounce = 100 * time.Millisecond
	}
	if opts.MaxDelay <= 0 {
		opts.MaxDelay = time.Second
	}
	if opts.MaxDelay < opts.Debounce {
		opts.MaxDelay = opts.Debounce
	}
	if opts.Workers <= 0 {
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.Observe == nil {
		opts.Observe = func(string, time.Duration) {}
	}
	if opts.OnBuild == nil {
		opts.OnBuild = func(string, *snapshot.Snapshot, error) {}
	}
	b := &Builder{
		mesh:     mesh,
		store:    store,
		opts:     opts,
		log:      opts.Logger,
		sem:      prio.New(opts.Workers),
		wake:     make(chan struct{}, 1),
		pending:  map[string]*pending{},
		changed:  map[string]time.Time{},
		building: map[string]bool{},
		queued:   map[string]*queued{},
		failures: map[string]error{},
	}
	b.released = sync.NewCond(&b.mu)
	return b
}

// Mesh returns the model the builder reads.
func (b *Builder) Mesh() *model.Mesh { return b.mesh }

// Apply records changes in the mesh and schedules a build of every tenant
// they can affect.
func (b *Builder) Apply(changes []model.Change) {
	if len(changes) == 0 {
		return
	}
	b.scheduleKind(b.mesh.Apply(changes), endpointsOnly(changes))
}

// SetDiagnostics replaces a source's diagnostics (a file's decode errors,
// say) and schedules the tenants whose status they change.
func (b *Builder) SetDiagnostics(source string, diags []snapshot.Diagnostic) {
	b.schedule(b.mesh.SetDiagnostics(source, diags))
}

func (b *Builder) schedule(tenants map[string]bool) { b.scheduleKind(tenants, false) }

// scheduleKind schedules tenants; endpoints says the change moved only
// endpoints.
func (b *Builder) scheduleKind(tenants map[string]bool, endpoints bool) {
	if len(tenants) == 0 {
		return
	}
	now := time.Now()
	b.mu.Lock()
	for t := range tenants {
		if q := b.queued[t]; q != nil {
			// Its build has not read the mesh yet and will read this
			// change: it takes the change's rank when that is narrower.
			q.endpoints = q.endpoints && endpoints
			if len(tenants) < q.breadth {
				q.breadth = len(tenants)
				b.sem.Raise(q.w, q.breadth)
			}
			b.changed[t] = now
			continue
		}
		if p := b.pending[t]; p != nil {
			p.last = now
			p.endpoints = p.endpoints && endpoints
		} else {
			// Leading edge: a tenant quiet for a whole debounce window is
			// built at once; changes that follow within the window are
			// coalesced as usual (quiet time plus a maximum delay).
			quiet := now.Sub(b.changed[t]) >= b.opts.Debounce && !b.building[t]
			b.pending[t] = &pending{first: now, last: now, now: quiet, endpoints: endpoints}
		}
		b.changed[t] = now
	}
	if len(b.changed) > 4*len(tenants)+1024 {
		for t, at := range b.changed { // forget tenants quiet for long: they are quiet either way
			if now.Sub(at) > b.opts.MaxDelay {
				delete(b.changed, t)
			}
		}
	}
	b.mu.Unlock()
	b.poke()
}

// Rebuild schedules tenants for a build, as a change to them would (a
// tenant this replica now owns, say).
func (b *Builder) Rebuild(tenants []string) {
	set := map[string]bool{}
	for _, t := range tenants {
		set[t] = true
	}
	b.schedule(set)
}

// BuildAll builds every tenant now, synchronously, and removes from the
// store tenants that no longer exist. It returns the joined system errors.
// A tenant the scheduler is building is waited for, then built again from
// the current mesh: never two builds of one tenant at once.
func (b *Builder) BuildAll() error {
	tenants := b.mesh.Tenants()
	errs := make([]error, len(tenants))
	var wg sync.WaitGroup
	for i, t := range tenants {
		b.take(len(tenants))
		wg.Add(1)
		go func() {
			defer func() { b.sem.Release(); wg.Done() }()
			b.claim(t)
			defer b.release(t)
			errs[i] = b.buildTenant(t, time.Now(), false, len(tenants))
		}()
	}
	wg.Wait()
	for _, t := range b.store.Tenants() {
		if !slices.Contains(tenants, t) {
			b.store.Remove(t)
		}
	}
	return joinErrors(errs)
}

// claim waits until no build of tenant runs and marks it building. Its
// pending changes are taken: the build reads the mesh as it is now.
func (b *Builder) claim(tenant string) {
	b.mu.Lock()
	for b.building[tenant] {
		b.released.Wait()
	}
	b.building[tenant] = true
	delete(b.pending, tenant)
	b.mu.Unlock()
}

// release ends tenant's build and wakes the scheduler if changes arrived
// meanwhile.
func (b *Builder) release(tenant string) {
	b.mu.Lock()
	delete(b.building, tenant)
	_, again := b.pending[tenant]
	b.released.Broadcast()
	b.mu.Unlock()
	if again {
		b.poke()
	}
}

func (b *Builder) poke() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// Run builds pending tenants as their debounce expires, until ctx ends.
// It waits for running builds before it returns.
func (b *Builder) Run(ctx context.Context) error {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	defer b.wg.Wait()
	for {
		next := b.dispatchDue(time.Now())
		if next > 0 {
			timer.Reset(next)
		} else {
			timer.Reset(time.Hour)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-b.wake:
		case <-timer.C:
		}
	}
}

// dispatchDue starts a build for each tenant whose debounce has expired and
// returns how long until the next one is due (0: nothing pending).
func (b *Builder) dispatchDue(now time.Time) time.Duration {
	b.mu.Lock()
	var due []string
	var firsts []time.Time
	var eps []bool
	next := time.Duration(0)
	for t, p := range b.pending {
		if b.building[t] {
			continue // rescheduled when that build ends
		}
		at := p.last.Add(b.opts.Debounce)
		if limit := p.first.Add(b.opts.MaxDelay); limit.Before(at) {
			at = limit
		}
		if p.now {
			at = p.first
		}
		if !at.After(now) {
			due = append(due, t)
			firsts = append(firsts, p.first)
			eps = append(eps, p.endpoints)
			delete(b.pending, t)
			b.building[t] = true
			continue
		}
		if wait := at.Sub(now); next == 0 || wait < next {
			next = wait
		}
	}
	b.mu.Unlock()
	for i, t := range due {
		b.opts.Observe("debounce", now.Sub(firsts[i]))
		b.wg.Add(1)
		go b.runBuild(t, firsts[i], eps[i], len(due))
	}
	return next
}

// runBuild builds a tenant dispatchDue claimed, one of breadth tenants
// it dispatched together.
func (b *Builder) runBuild(tenant string, changedAt time.Time, endpoints bool, breadth int) {
	defer b.wg.Done()
	defer b.release(tenant)
	if w := b.sem.Enter(breadth); w != nil {
		q := &queued{w: w, breadth: breadth, endpoints: endpoints}
		b.mu.Lock()
		b.queued[tenant] = q
		b.mu.Unlock()
		<-w.Ready()
		b.mu.Lock()
		delete(b.queued, tenant)
		breadth, endpoints = q.breadth, q.endpoints
		b.mu.Unlock()
	}
	defer b.sem.Release()
	_ = b.buildTenant(tenant, changedAt, endpoints, breadth)
}

// take waits for a build slot. Builds of narrow changes (few tenants
// dispatched together) take one before those of broad ones: a change to
// one tenant made while every tenant is being built waits for one build
// to end, not for all of them.
func (b *Builder) take(breadth int) {
	if w := b.sem.Enter(breadth); w != nil {
		<-w.Ready()
	}
}

// buildTenant builds and publishes one tenant. On a system error the last
// good snapshot stays in place and the error is kept for status.
//
// breadth is how many tenants were dispatched with it (Snapshot.Breadth).
func (b *Builder) buildTenant(tenant string, changedAt time.Time, endpoints bool, breadth int) error {
	if b.opts.Owns != nil && !b.opts.Owns(tenant) {
		// Built by its owner: this replica only learns whether the tenant
		// still exists, without making its view.
		gone := len(b.mesh.Namespaces(tenant)) == 0
		if b.opts.Foreign != nil {
			b.opts.Foreign(tenant, gone)
		}
		if !gone {
			return nil
		}
	}
	view := b.mesh.View(tenant)
	if len(view.Namespaces) == 0 {
		b.store.Remove(tenant)
		b.mu.Lock()
		delete(b.failures, tenant)
		b.mu.Unlock()
		b.opts.OnBuild(tenant, nil, nil)
		return nil
	}
	start := time.Now()
	build := b.opts.Build
	if endpoints && b.opts.BuildEndpoints != nil {
		build = b.opts.BuildEndpoints
	}
	snap, err := b.safeBuild(build, view)
	b.opts.Observe("build", time.Since(start))
	b.mu.Lock()
	if err != nil {
		b.failures[tenant] = err
	} else {
		delete(b.failures, tenant)
	}
	b.mu.Unlock()
	if err != nil {
		b.opts.OnBuild(tenant, snap, err)
		b.log.Error("tenant build failed; keeping its last good snapshot", "tenant", tenant, "err", err)
		return err
	}
	snap.Breadth = breadth
	start = time.Now()
	if b.store.Publish(snap) {
		b.opts.Observe("publish", time.Since(start))
		b.log.Debug("published", "tenant", tenant, "version", snap.Version)
		if b.opts.OnPublish != nil {
			b.opts.OnPublish(snap, changedAt)
		}
	}
	// Told once the store holds it: what OnBuild lets others see of the
	// tenant (the peer face) is then this build.
	b.opts.OnBuild(tenant, snap, nil)
	return nil
}

// safeBuild turns a panic in a builder into an error for that tenant, so a
// bug triggered by one tenant's config never takes the others down.
func (b *Builder) safeBuild(build BuildFunc, v *model.TenantView) (snap *snapshot.Snapshot, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("build of tenant %s panicked: %v (a bug in xdshard; please report it with the tenant's config)", v.Tenant, r)
		}
	}()
	return build(v)
}

// Failures returns the tenants whose last build failed, with the error.
func (b *Builder) Failures() map[string]error {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[string]error, len(b.failures))
	for t, e := range b.failures {
		out[t] = e
	}
	return out
}

// Idle reports whether no change is waiting or being built.
func (b *Builder) Idle() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.pending) == 0 && len(b.building) == 0
}

func joinErrors(errs []error) error {
	var out []error
	for _, e := range errs {
		if e != nil {
			out = append(out, e)
		}
	}
	if len(out) == 0 {
		return nil
	}
	return fmt.Errorf("%d tenant builds failed: %w", len(out), errors.Join(out...))
}
