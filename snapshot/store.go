package snapshot

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultHistory is how many versions of each tenant a Store keeps for
// rollback when NewStore is given zero.
const DefaultHistory = 10

// Store keeps, for every tenant, the current snapshot and the last K
// distinct versions, and tells watchers when a tenant's snapshot changes.
//
// All fields are guarded by mu. Watchers are signalled after mu is released,
// through a channel of capacity one, so a slow watcher never blocks a
// publisher and repeated changes coalesce into one wake-up: the watcher then
// reads the latest snapshot with Current.
type Store struct {
	historyLen int
	rollout    atomic.Bool // new versions are candidates, served to canaries first

	mu       sync.Mutex
	tenants  map[string]*entry
	watches  map[string]map[*Watch]struct{} // tenant -> watches; "" watches every tenant
	interest func(tenant string, watched bool)
	decided  func(tenant string)
}

// OnDecision sets f to be told, outside the store's lock, each time a
// decision about a tenant is made here: a rollback pins it, an unpin
// ends the pin, a rollout of its own is aborted (its candidate held out).
// Decision reads what it is now. Set it before the first decision.
func (s *Store) OnDecision(f func(tenant string)) {
	s.mu.Lock()
	s.decided = f
	s.mu.Unlock()
}

// decide tells the decision hook about tenant.
func (s *Store) decide(tenant string) {
	s.mu.Lock()
	f := s.decided
	s.mu.Unlock()
	if f != nil {
		f(tenant)
	}
}

// Decision is what was decided about tenant and holds until undone: the
// version it is pinned to (nil: none), and the candidate held out, and
// why ("": none).
func (s *Store) Decision(tenant string) (pinned *Snapshot, held, why string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.tenants[tenant]
	if e == nil {
		return nil, "", ""
	}
	if e.pinned {
		pinned = e.current
	}
	if e.held != nil {
		held, why = e.held.Version, e.heldWhy
	}
	return pinned, held, why
}

// Restore makes decisions kept beyond a former process hold again:
// tenant is served pinned (the version, whatever builds make, until
// Unpin), and the held candidate is not rolled out again. A tenant pinned
// here already keeps its pin.
func (s *Store) Restore(tenant string, pinned *Snapshot, held, why string) {
	s.mu.Lock()
	e := s.tenants[tenant]
	if e == nil {
		e = &entry{}
		s.tenants[tenant] = e
	}
	if held != "" && e.held == nil {
		e.held, e.heldWhy = &Snapshot{Tenant: tenant, Version: held}, why
	}
	if pinned == nil || e.pinned {
		s.mu.Unlock()
		return
	}
	p := pinned.withPinned(true)
	if e.current == nil {
		e.latest, e.history = p, []*Snapshot{p}
	} else if indexVersion(e.history, p.Version) < 0 {
		e.history = append([]*Snapshot{p}, e.history...)
	}
	e.current, e.pinned, e.candidate = p, true, nil
	s.unlockWaking(tenant)
}

// OnInterest sets f to be told when a tenant gets its first watch (true)
// and loses its last (false); tenant "" stands for watches of every
// tenant. A sharded replica fetches the snapshots of tenants it does not
// own only while someone here watches them. Set it before the first
// Watch; f is called outside the store's lock.
func (s *Store) OnInterest(f func(tenant string, watched bool)) {
	s.mu.Lock()
	s.interest = f
	s.mu.Unlock()
}

// Watched reports whether tenant (or "", every tenant) has a watch.
func (s *Store) Watched(tenant string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.watches[tenant]) > 0
}

type entry struct {
	current *Snapshot   // what is served (to every client but canaries during a rollout)
	latest  *Snapshot   // the newest published; current unless pinned or in rollout
	pinned  bool        // current is held: newer versions wait in history
	history []*Snapshot // published versions, oldest first, at most historyLen, latest last

	candidate *Snapshot // in rollout: served to canaries only, until promoted or aborted
	since     time.Time // when candidate was published
	held      *Snapshot // the last aborted candidate: the same version is not tried again
	heldWhy   string
	// fetched: candidate is the owner's, fetched (PublishFetchedCandidate):
	// this replica serves it to its canaries and gives the owner their
	// verdict, but never promotes it.
	fetched bool

	// marked is current as the peer exchange sends it during a rollout,
	// announcing the candidate (made once per current and candidate).
	marked, markedOf *Snapshot
}

// NewStore returns an empty Store keeping history versions per tenant
// (DefaultHistory if history <= 0).
func NewStore(history int) *Store {
	if history <= 0 {
		history = DefaultHistory
	}
	return &Store{
		historyLen: history,
		tenants:    map[string]*entry{},
		watches:    map[string]map[*Watch]struct{}{},
	}
}

// Publish makes snap its tenant's current snapshot. It returns false, and
// changes nothing, when the tenant already serves that version: rebuilding
// identical config causes no push.
func (s *Store) Publish(snap *Snapshot) bool { return s.publish(snap, s.rolloutFor(snap), false) }

// rolloutFor says whether snap, once published, is a candidate: its
// tenant's own setting, else the store's.
func (s *Store) rolloutFor(snap *Snapshot) bool {
	switch snap.Rollout.Mode {
	case RolloutCanary:
		return true
	case RolloutOff:
		return false
	}
	return s.rollout.Load()
}

// PublishRolledOut is Publish for a version rolled out elsewhere (a
// tenant's owner ran its canary rollout): it is served at once, never a
// candidate here.
//
// Its pin is its owner's: a pinned snapshot is served and held here as
// a rollback here would hold it (builds here, should this replica come to
// own the tenant, wait in history), and one that is not ends a pin.
func (s *Store) PublishRolledOut(snap *Snapshot) bool { return s.publish(snap, false, true) }

// Publish is publish of a build here; PublishRolledOut of a fetched copy.
func (s *Store) publish(snap *Snapshot, rollout, fetched bool) bool {
	s.mu.Lock()
	e := s.tenants[snap.Tenant]
	if e == nil {
		e = &entry{}
		s.tenants[snap.Tenant] = e
	}
	if fetched && snap.Held != "" && (e.held == nil || e.held.Version != snap.Held) {
		// The owner took this candidate back: a later owner holds it out too.
		e.held, e.heldWhy = &Snapshot{Tenant: snap.Tenant, Version: snap.Held}, snap.HeldWhy
	}
	// A fetched candidate stays while the owner announces it.
	keep := fetched && e.fetched && e.candidate != nil && snap.Candidate == e.candidate.Version
	if fetched && !keep && e.fetched && e.candidate != nil {
		e.candidate = nil
		defer s.Wake(snap.Tenant) // its canaries go back to the stable version
	}
	if fetched && e.current != nil && (e.current.Version == snap.Version || e.latest.Version == snap.Version) &&
		(e.current.Version != snap.Version || e.pinned != snap.Pinned) {
		// The owner pinned what it served, or unpinned it; or it serves,
		// unpinned, the newest version this replica holds while it holds
		// an older one pinned (a pin it restored, or held while it built
		// the tenant itself): the owner's choice.
		e.pinned, e.current = snap.Pinned, snap
		if !keep {
			e.candidate = nil
		}
		if e.latest.Version == snap.Version {
			e.latest = snap
			e.history[len(e.history)-1] = snap
		}
		s.unlockWaking(snap.Tenant)
		return true
	}
	if e.latest != nil && e.latest.Version == snap.Version {
		// Same config; keep the newer diagnostics and rollout setting
		// without waking anyone.
		if !slices.Equal(e.latest.Diagnostics, snap.Diagnostics) || e.latest.Rollout != snap.Rollout {
			cp := *e.latest
			cp.Diagnostics, cp.Rollout, cp.peer = snap.Diagnostics, snap.Rollout, &peerCache{}
			if e.current == e.latest {
				e.current = &cp
			}
			e.latest = &cp
			e.history[len(e.history)-1] = &cp
		}
		s.mu.Unlock()
		return false
	}
	e.latest = snap
	e.history = slices.DeleteFunc(e.history, func(h *Snapshot) bool { return h.Version == snap.Version })
	e.history = append(e.history, snap)
	if over := len(e.history) - s.historyLen; over > 0 {
		// The pinned version is kept whatever its age: it is served.
		for i := 0; i < len(e.history) && over > 0; {
			if e.pinned && e.history[i].Version == e.current.Version {
				i++
				continue
			}
			e.history = slices.Delete(e.history, i, i+1)
			over--
		}
	}
	if fetched {
		// The owner's choice, pin included.
		e.pinned, e.current = snap.Pinned, snap
		if !keep {
			e.candidate = nil
		}
		s.unlockWaking(snap.Tenant)
		return true
	}
	if e.pinned {
		s.mu.Unlock()
		return false // held: it waits until the tenant is unpinned
	}
	if !rollout {
		e.candidate = nil // a version served as it is ends any rollout here
	}
	if rollout && e.current != nil {
		switch {
		case snap.Version == e.current.Version:
			e.candidate = nil // back to what is served: nothing to roll out
		case e.held != nil && snap.Version == e.held.Version:
			s.mu.Unlock()
			return false // rolled back once already: not tried again
		default:
			e.candidate, e.since, e.fetched = snap, time.Now(), false
		}
		s.unlockWaking(snap.Tenant)
		return true
	}
	e.current = snap
	s.unlockWaking(snap.Tenant)
	return true
}

// Rollback serves an earlier kept version of tenant, version (or, with
// "", the one before the version served), and pins it: versions published
// later wait in history until Unpin. It returns the version now served.
func (s *Store) Rollback(tenant, version string) (*Snapshot, error) {
	s.mu.Lock()
	e := s.tenants[tenant]
	if e == nil || e.current == nil {
		s.mu.Unlock()
		return nil, fmt.Errorf("tenant %q has no snapshot here", tenant)
	}
	i := indexVersion(e.history, e.current.Version)
	var to *Snapshot
	if version == "" {
		if i <= 0 {
			s.mu.Unlock()
			return nil, fmt.Errorf("tenant %q has no version before %s kept (kept: %s)", tenant, e.current.Version, versions(e.history))
		}
		to = e.history[i-1]
	} else {
		j := slices.IndexFunc(e.history, func(h *Snapshot) bool { return h.Version == version })
		if j < 0 {
			s.mu.Unlock()
			return nil, fmt.Errorf("version %q of tenant %q is not kept (kept: %s)", version, tenant, versions(e.history))
		}
		to = e.history[j]
	}
	changed := e.current.Version != to.Version || !e.pinned || e.candidate != nil
	e.current, e.pinned, e.candidate = to.withPinned(true), true, nil
	if changed {
		s.unlockWaking(tenant)
	} else {
		s.mu.Unlock()
	}
	s.decide(tenant)
	return to, nil
}

// Unpin serves tenant's newest version again, and follows new ones.
func (s *Store) Unpin(tenant string) (*Snapshot, error) {
	s.mu.Lock()
	e := s.tenants[tenant]
	if e == nil || e.current == nil {
		s.mu.Unlock()
		return nil, fmt.Errorf("tenant %q has no snapshot here", tenant)
	}
	changed := e.current != e.latest
	e.current, e.pinned = e.latest, false
	latest := e.latest
	if changed {
		s.unlockWaking(tenant)
	} else {
		s.mu.Unlock()
	}
	s.decide(tenant)
	return latest, nil
}

// Pinned says whether tenant is pinned, and how many published versions
// newer than the one served wait.
func (s *Store) Pinned(tenant string) (pinned bool, waiting int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.tenants[tenant]
	if e == nil || !e.pinned {
		return false, 0
	}
	return true, len(e.history) - 1 - indexVersion(e.history, e.current.Version)
}

// indexVersion is the index of version in history, -1 if it is not kept.
func indexVersion(history []*Snapshot, version string) int {
	return slices.IndexFunc(history, func(h *Snapshot) bool { return h.Version == version })
}

func versions(h []*Snapshot) string {
	var out []string
	for _, s := range h {
		out = append(out, s.Version)
	}
	return strings.Join(out, ", ")
}

// SetRollout turns canary rollout on or off: with it on, a newly
// published version of a tenant that serves one already is a candidate,
// served to canaries (Serving) until Promote or Abort.
func (s *Store) SetRollout(on bool) { s.rollout.Store(on) }

// Serving is the snapshot a client of tenant is served: the candidate if
// there is one and canary says the client is one of its canaries (it is
// called under the store's lock, so it must not call the store), the
// current one otherwise.
func (s *Store) Serving(tenant string, canary func(candidate *Snapshot) bool) (snap *Snapshot, isCanary bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.tenants[tenant]
	if e == nil {
		return nil, false
	}
	if e.candidate != nil && canary(e.candidate) {
		return e.candidate, true
	}
	return e.current, false
}

// RolloutState is a tenant's rollout: its candidate (nil: none) and
// since when, and the version held out after an abort, and why.
type RolloutState struct {
	Candidate *Snapshot
	Since     time.Time
	Held      *Snapshot
	HeldWhy   string
	// Fetched: the candidate is its owner's, rolled out there; this
	// replica serves it to its own canaries and reports their verdict.
	Fetched bool
}

// Rollout returns tenant's rollout state.
func (s *Store) Rollout(tenant string) RolloutState {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.tenants[tenant]
	if e == nil {
		return RolloutState{}
	}
	return RolloutState{e.candidate, e.since, e.held, e.heldWhy, e.fetched}
}

// PeerServing is what the peer exchange sends of tenant: its candidate
// (candidate true; nil when it has none), or the version served to every
// client, announcing the candidate if there is one.
func (s *Store) PeerServing(tenant string, candidate bool) *Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.tenants[tenant]
	switch {
	case e == nil:
		return nil
	case candidate:
		return e.candidate
	case e.current == nil || e.candidate == nil && e.held == nil:
		return e.current
	}
	var cand, held string
	if e.candidate != nil {
		cand = e.candidate.Version
	}
	if e.held != nil {
		held = e.held.Version
	}
	if e.markedOf != e.current || e.marked.Candidate != cand || e.marked.Held != held || e.marked.HeldWhy != e.heldWhy {
		e.marked, e.markedOf = e.current.withMarks(cand, held, e.heldWhy), e.current
	}
	return e.marked
}

// PublishFetchedCandidate serves snap, the version tenant's owner rolls
// out, to this replica's canaries of the tenant, until the owner's
// stable version (PublishRolledOut) no longer announces it. It is never
// promoted here; the owner decides. It fails when it cannot be a
// candidate here: no stable version yet, it is the one served, the tenant
// is pinned here, or this replica's canaries rejected it already.
func (s *Store) PublishFetchedCandidate(snap *Snapshot) error {
	s.mu.Lock()
	e := s.tenants[snap.Tenant]
	switch {
	case e == nil || e.current == nil:
		s.mu.Unlock()
		return fmt.Errorf("tenant %q has no stable version here yet", snap.Tenant)
	case e.current.Version == snap.Version:
		s.mu.Unlock()
		return fmt.Errorf("version %s of tenant %q is served to every client here already", snap.Version, snap.Tenant)
	case e.pinned:
		s.mu.Unlock()
		return fmt.Errorf("tenant %q is pinned here", snap.Tenant)
	case e.held != nil && e.held.Version == snap.Version:
		why := e.heldWhy
		s.mu.Unlock()
		return fmt.Errorf("rejected here: %s", why)
	case e.candidate != nil && e.candidate.Version == snap.Version:
		s.mu.Unlock()
		return nil
	}
	e.candidate, e.since, e.fetched = snap, time.Now(), true
	s.unlockWaking(snap.Tenant)
	return nil
}

// EndFetchedCandidate takes a fetched candidate of tenant back from the
// canaries here (its owner promoted or aborted it, or this replica no
// longer fetches the tenant).
func (s *Store) EndFetchedCandidate(tenant string) {
	s.mu.Lock()
	e := s.tenants[tenant]
	if e == nil || e.candidate == nil || !e.fetched {
		s.mu.Unlock()
		return
	}
	e.candidate, e.fetched = nil, false
	s.unlockWaking(tenant)
}

// InRollout lists the tenants with a candidate, sorted.
func (s *Store) InRollout() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for t, e := range s.tenants {
		if e.candidate != nil {
			out = append(out, t)
		}
	}
	slices.Sort(out)
	return out
}

// Promote serves tenant's candidate to every client.
func (s *Store) Promote(tenant string) (*Snapshot, error) {
	s.mu.Lock()
	e := s.tenants[tenant]
	if e == nil || e.candidate == nil {
		s.mu.Unlock()
		return nil, fmt.Errorf("tenant %q has no version in rollout", tenant)
	}
	e.current, e.candidate = e.candidate, nil
	promoted := e.current
	s.unlockWaking(tenant)
	return promoted, nil
}

// Abort takes tenant's candidate back: canaries are served the current
// version again, and the candidate's version is held out (a build of the
// same content is not tried again) with why.
func (s *Store) Abort(tenant, why string) (*Snapshot, error) {
	s.mu.Lock()
	e := s.tenants[tenant]
	if e == nil || e.candidate == nil {
		s.mu.Unlock()
		return nil, fmt.Errorf("tenant %q has no version in rollout", tenant)
	}
	e.held, e.heldWhy, e.candidate = e.candidate, why, nil
	held, own := e.held, !e.fetched
	s.unlockWaking(tenant)
	if own {
		s.decide(tenant) // a fetched one's abort is its owner's to keep
	}
	return held, nil
}

// Remove forgets a tenant that no longer exists. Its watchers are woken and
// will find no snapshot.
func (s *Store) Remove(tenant string) {
	s.mu.Lock()
	if _, ok := s.tenants[tenant]; !ok {
		s.mu.Unlock()
		return
	}
	delete(s.tenants, tenant)
	s.unlockWaking(tenant)
}

// RemoveUnwatched forgets tenant (if the store has it) unless a client
// watches it (or every tenant), in one step with that check, and says
// whether the tenant is unwatched: a client that starts watching
// meanwhile keeps it.
func (s *Store) RemoveUnwatched(tenant string) bool {
	s.mu.Lock()
	if len(s.watches[tenant]) > 0 || len(s.watches[""]) > 0 {
		s.mu.Unlock()
		return false
	}
	if _, ok := s.tenants[tenant]; !ok {
		s.mu.Unlock()
		return true
	}
	delete(s.tenants, tenant)
	s.unlockWaking(tenant)
	return true
}

// Wake wakes tenant's watchers (and those of every tenant) without a
// change: something they decide by besides the store changed.
func (s *Store) Wake(tenant string) {
	s.mu.Lock()
	s.unlockWaking(tenant)
}

// unlockWaking releases s.mu and then wakes tenant's watchers (and those
// of every tenant), so no watcher is signalled under the lock.
func (s *Store) unlockWaking(tenant string) {
	wake := s.watchersLocked(tenant)
	s.mu.Unlock()
	for _, w := range wake {
		w.signal()
	}
}

func (s *Store) watchersLocked(tenant string) []*Watch {
	out := make([]*Watch, 0, len(s.watches[tenant])+len(s.watches[""]))
	for w := range s.watches[tenant] {
		out = append(out, w)
	}
	for w := range s.watches[""] {
		out = append(out, w)
	}
	return out
}

// Current returns the tenant's current snapshot, or nil if it has none.
func (s *Store) Current(tenant string) *Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.tenants[tenant]; e != nil {
		return e.current
	}
	return nil
}

// Latest is the newest version published of tenant: Current unless the
// tenant is pinned or in rollout; nil if none.
func (s *Store) Latest(tenant string) *Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.tenants[tenant]; e != nil {
		return e.latest
	}
	return nil
}

// History returns the tenant's kept versions, oldest first, the newest
// last (the one served, unless the tenant is pinned to an older one).
func (s *Store) History(tenant string) []*Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.tenants[tenant]; e != nil {
		return slices.Clone(e.history)
	}
	return nil
}

// Tenants lists the tenants that have a snapshot, sorted.
func (s *Store) Tenants() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Sorted(maps.Keys(s.tenants))
}

// Watch returns a Watch that is signalled whenever tenant's snapshot changes
// or is removed; tenant "" watches every tenant. Close it when done.
func (s *Store) Watch(tenant string) *Watch {
	w := &Watch{store: s, tenant: tenant, c: make(chan struct{}, 1)}
	s.mu.Lock()
	m := s.watches[tenant]
	if m == nil {
		m = map[*Watch]struct{}{}
		s.watches[tenant] = m
	}
	m[w] = struct{}{}
	first, f := len(m) == 1, s.interest
	s.mu.Unlock()
	if first && f != nil {
		f(tenant, true)
	}
	return w
}

// Watch is a coalescing change signal for one tenant (or all).
type Watch struct {
	store   *Store
	tenant  string
	c       chan struct{}
	signals atomic.Uint64 // signals sent, counted before each is sent
}

// C is signalled (capacity one, never closed) after a change.
func (w *Watch) C() <-chan struct{} { return w.c }

// Signals counts the signals so far. A watcher that reads it, then the
// store, has seen every change signalled up to the count it read: a
// change is made before its signal is counted.
func (w *Watch) Signals() uint64 { return w.signals.Load() }

func (w *Watch) signal() {
	w.signals.Add(1)
	select {
	case w.c <- struct{}{}:
	default: // a wake-up is already pending; it will see the latest state
	}
}

// Close stops the signals. It is safe to call more than once.
func (w *Watch) Close() {
	s := w.store
	s.mu.Lock()
	last := false
	if m := s.watches[w.tenant]; m != nil {
		if _, ok := m[w]; ok {
			delete(m, w)
			if len(m) == 0 {
				delete(s.watches, w.tenant)
				last = true
			}
		}
	}
	f := s.interest
	s.mu.Unlock()
	if last && f != nil {
		f(w.tenant, false)
	}
}
