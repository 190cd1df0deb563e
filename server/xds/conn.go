package xds

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/xdshard/xdshard/identity"
	"github.com/xdshard/xdshard/internal/cache"
	"github.com/xdshard/xdshard/snapshot"
)

// typeOrder is the order pending types are pushed in: clusters before
// their endpoints, listeners before their routes, as Envoy's warming needs.
var typeOrder = []string{snapshot.ClusterType, snapshot.EndpointType, snapshot.ListenerType, snapshot.RouteType}

func typeRank(t string) int {
	if i := slices.Index(typeOrder, t); i >= 0 {
		return i
	}
	return len(typeOrder)
}

// conn is one client stream. Fields above mu are read-only after creation;
// mu guards the rest (written by the receive loop, read by the send loop).
// Nothing slow runs under mu: encoding and sending happen outside it, so
// the receive loop never waits on them.
type conn struct {
	id        uint64
	node      *core.Node
	namespace string // the node's namespace, through which it was bound ("" for MCP)
	tenant    string
	view      snapshot.View
	delta     bool
	revision  string // MCP: the istiod's ISTIO_REVISION
	connected time.Time
	dirty     chan struct{}      // capacity one: "requests changed, look again"
	rate      *bucket            // only the receive loop uses it
	remote    string             // the client's address, as its transport sees it
	identity  *identity.Identity // verified; nil where claims are trusted
	shed      chan struct{}      // closed to end the stream (rebalance, drain); shedWhy says why
	shedOnce  sync.Once
	shedWhy   string            // written before shed is closed
	canary    atomic.Bool       // its last push was made from a rollout's candidate: it is one of the canaries
	labels    map[string]string // node metadata LABELS (bounded): what a rollout's canary selector matches
	// candidate: a peer stream fetching the tenant's rollout candidate
	// (node metadata CANDIDATE "true"); its ACK is that replica's canaries'
	// acceptance, its NACK their rejection.
	candidate bool
	// sendingSince is when the send in flight started (unix ns), 0 when
	// none is; sendTimedOut says the watchdog closed the connection for it.
	sendingSince atomic.Int64
	sendTimedOut atomic.Bool
	// progress is where the stream's two loops are, for a test to know
	// when the server has done all a request makes it do (settled).
	progress progress

	mu       sync.Mutex
	held     *slot      // the push slot held until the client answers what it was sent (push)
	lastSnap string     // the tenant version the last push looked at (SotW and delta)
	types    typeStates // requested types, in push order
	seq      uint64     // nonce counter
	subBytes int        // bytes of the names its subscriptions hold, all types (Limits.SubscriptionBytes)
	// heldBytes is what else it holds of the client's choosing, counted
	// in its connection's and client's budgets: its node, and the texts
	// of the NACKs it keeps.
	heldBytes int
}

// typeState is a stream's state for one type URL.
type typeState struct {
	// The flags, together (a stream holds four or five of these, ten
	// thousand streams a replica: the struct is kept within 256 bytes).
	requested bool
	wildcard  bool // the subscription is a wildcard
	sentWild  bool // the last response was made for a wildcard
	awaiting  bool // the last response's ACK or NACK is outstanding
	force     bool // push even if unchanged (EDS after CDS, RDS after LDS, a re-request)

	// gen counts the requests recorded for this type; a response prepared
	// outside the lock is sent only if gen did not move meanwhile.
	gen uint64

	// The subscription: sorted names and their hash, recomputed when the
	// names change, never per push; sorted is replaced, never modified, so
	// a push may read it after releasing the lock, and the streams that
	// ask for the same names share it (nameLists). Delta streams change
	// it name by name (recordDelta), through a map made for the request
	// that changes it and dropped after: a stream keeps no map of its
	// names (named looks them up in sorted).
	sorted   []string
	subBytes int // bytes of the names it holds
	nackHeld int // bytes of the kept NACK's text counted in the budgets
	hash     uint64

	// The last response sent (and whether its ACK or NACK is outstanding:
	// awaiting, above).
	sentSnap    string // the tenant version it was made from
	nonce       string
	sentVersion string
	sentSet     string // version of the set the response was made from (SotW) or its content key (MCP)
	sentHash    uint64 // subscription hash the response was made for
	sentAt      time.Time

	acked   string
	ackedAt time.Time
	nack    *NACK

	// SotW EDS and RDS (partialType): sentRef is the set the last response
	// was made from; holds is the set whose resources, for the
	// subscription hashed holdsHash, the client is known to hold: the set
	// of the last response it ACKed, nil after a NACK. A response may then
	// carry only the resources that differ from holds (partial.go).
	sentRef   *snapshot.Set
	holds     *snapshot.Set
	holdsHash uint64

	// Delta: what the client holds, and the subscribed names already
	// reported as missing. After a push the client holds exactly the
	// resources of the set pushed that it subscribes to (all of them when
	// wildcard), at that set's versions: level is that set and known is
	// nil, so the many streams of a tenant share what they hold instead
	// of a map each (see held). known is kept, level nil, from what a
	// client says it holds on its first request, and from a change of
	// subscription until the next push levels it again.
	level       *snapshot.Set
	known       map[string]string
	toldMissing map[string]bool
}

// held is the version of resource n the delta client holds, if any.
func (st *typeState) held(n string) (string, bool) {
	if st.known != nil || st.level == nil {
		v, ok := st.known[n]
		return v, ok
	}
	if !st.wildcard && !st.named(n) {
		return "", false
	}
	if r := st.level.Get(n); r != nil {
		return r.Version, true
	}
	return "", false
}

// spell makes what the delta client holds an explicit map (known), to be
// changed: before its subscription changes, or a version is written.
func (st *typeState) spell() {
	if st.known != nil {
		return
	}
	st.known = map[string]string{}
	if st.level == nil {
		return
	}
	if st.wildcard {
		for _, r := range st.level.Items {
			st.known[r.Name] = r.Version
		}
	} else {
		for _, n := range st.sorted {
			if r := st.level.Get(n); r != nil {
				st.known[n] = r.Version
			}
		}
	}
	st.level = nil
}

// levelled says, after a push of set, whether the client holds exactly
// set's resources in its subscription at set's versions; it then keeps
// set in place of its map.
func (st *typeState) levelled(set *snapshot.Set) {
	if st.known == nil {
		st.level = set
		return
	}
	want := 0
	if st.wildcard {
		want = set.Len()
	} else {
		for _, n := range st.sorted {
			if set.Get(n) != nil {
				want++
			}
		}
	}
	if len(st.known) != want {
		return
	}
	for n, v := range st.known {
		if r := set.Get(n); r == nil || r.Version != v {
			return
		}
	}
	st.known, st.level = nil, set
}

// progress counts a stream's requests and responses: handled, the
// requests the receive loop is done with (recorded, and the send loop
// woken if they made a push due); wokeAt, the count when it last woke the
// send loop; pushed, the count as of the start of the send loop's last
// pass that left nothing to look at again; sent, the responses gRPC took.
// A stream has done all its requests make it do when handled counts
// them and pushed has caught up with wokeAt (settled).
// watched is the count of the store watch's signals as of the start of
// that pass: the snapshots published until then have been looked at.
type progress struct {
	handled, wokeAt, pushed, sent, watched atomic.Uint64
	watch                                  atomic.Pointer[snapshot.Watch] // the send loop's, once it runs
}

// handledFirst counts the request read before the stream's loops start:
// the send loop's first pass answers it.
func (p *progress) handledFirst() {
	p.wokeAt.Store(1)
	p.handled.Store(1)
}

// settled says the stream has done all that its first n requests, and
// every snapshot published so far, make it do: every response they cause
// has been handed to gRPC (and counted in sent).
func (p *progress) settled(n uint64) bool {
	w := p.watch.Load()
	return p.handled.Load() >= n && p.pushed.Load() >= p.wokeAt.Load() && w != nil && p.watched.Load() >= w.Signals()
}

// NACK is a rejected response, kept for status.
type NACK struct {
	Version string `json:"version"`
	// Snapshot is the tenant version the rejected response was made from.
	Snapshot string    `json:"snapshot,omitempty"`
	Message  string    `json:"message"`
	At       time.Time `json:"at"`
}

func newConn(id uint64, node *core.Node, namespace, tenant string, view snapshot.View, delta bool) *conn {
	return &conn{id: id, node: node, namespace: namespace, tenant: tenant, view: view, delta: delta, connected: time.Now(),
		dirty: make(chan struct{}, 1), shed: make(chan struct{}), rate: newBucket(Limits{}.withDefaults())} // register sets the server's
}

func (c *conn) signal() {
	select {
	case c.dirty <- struct{}{}:
	default:
	}
}

// stateLocked returns the state of typeURL, creating it.
func (c *conn) stateLocked(typeURL string) *typeState {
	st := c.types.get(typeURL)
	if st == nil {
		st = &typeState{}
		c.types.add(typeURL, st)
	}
	st.gen++
	return st
}

// typeStates are a stream's types in push order (typeRank, then by
// name). A slice, not a map: a stream has four or five types (an MCP
// stream up to mcpMaxTypes), and ten thousand streams' maps were a
// twentieth of what a synced proxy cost.
type typeStates []typeEntry

type typeEntry struct {
	url string
	st  *typeState
}

// get is typeURL's state, or nil.
func (ts typeStates) get(typeURL string) *typeState {
	for _, e := range ts {
		if e.url == typeURL {
			return e.st
		}
	}
	return nil
}

// add inserts typeURL's state in push order (it is not there).
func (ts *typeStates) add(typeURL string, st *typeState) {
	i, _ := slices.BinarySearchFunc(*ts, typeURL, func(e typeEntry, t string) int {
		if ra, rb := typeRank(e.url), typeRank(t); ra != rb {
			return ra - rb
		}
		return strings.Compare(e.url, t)
	})
	*ts = slices.Insert(*ts, i, typeEntry{canonicalType(typeURL), st})
}

// canonicalType is the package's own string for a type URL it serves, so
// that a stream's state does not keep the copy each request decoded.
func canonicalType(t string) string {
	if i := slices.Index(knownTypes, t); i >= 0 {
		return knownTypes[i]
	}
	return t
}

// canonicalTypeBytes is canonicalType of a type URL's bytes, copied only
// when it is not one of the package's own.
func canonicalTypeBytes(t []byte) string {
	for _, k := range knownTypes {
		if string(t) == k { // compared without a copy
			return k
		}
	}
	return string(t)
}

var knownTypes = append(slices.Clip(typeOrder), snapshot.NameTableType, snapshot.PeerType)

// named says whether n is in the subscription.
func (st *typeState) named(n string) bool {
	_, ok := slices.BinarySearch(st.sorted, n)
	return ok
}

// setSorted sets the subscription's sorted names and hashes them; lists
// shares one list among the streams that ask for the same names.
func (st *typeState) setSorted(sorted []string, lists *nameLists) {
	h := xxhash.New()
	for _, n := range sorted {
		_, _ = h.WriteString(n)
		_, _ = h.Write([]byte{0})
	}
	st.hash = h.Sum64()
	st.sorted = lists.intern(st.hash, sorted)
}

// nameLists keeps the subscriptions' sorted name lists by their hash, so
// the streams of a tenant that ask for the same names (every sidecar of
// a tenant asks for the same clusters' endpoints) hold one list between
// them: with each stream's own, the lists were a tenth of what a synced
// SotW proxy cost. A list is replaced, never modified, so sharing it is
// safe. Bounded by bytes; a list it let go stays with the streams that
// hold it.
type nameLists struct {
	lru *cache.LRU[uint64, []string]
}

// nameListsBytes bounds the lists kept for sharing: lists of names the
// tenant serves only (listsFor), a few per tenant and type, whose strings
// are the snapshot's.
const nameListsBytes = 4 << 20

// listsFor is the server's shared lists for a subscription to sorted of
// typeURL, when every name is a resource the stream's tenant serves now;
// nil otherwise, and the stream keeps its list to itself: made-up names
// (an adversary's) are never kept beyond the stream that asked for them.
// Called with c.mu held; the store has its own lock.
func (s *Server) listsFor(c *conn, typeURL string, sorted []string) *nameLists {
	if s.lists == nil || len(sorted) == 0 {
		return nil
	}
	set, _ := setFor(s.store.Current(c.tenant), c.view, typeURL)
	if set == nil {
		return nil
	}
	for _, n := range sorted {
		if set.Get(n) == nil {
			return nil
		}
	}
	return s.lists
}

func newNameLists(m *cache.Metrics) *nameLists {
	return &nameLists{lru: cache.New(cache.Options[uint64, []string]{MaxBytes: nameListsBytes, Size: namesSize, Metrics: m})}
}

func namesSize(names []string) int64 {
	n := int64(16 * len(names))
	for _, s := range names {
		n += int64(len(s))
	}
	return n
}

// intern is the list kept for these names, or names, kept from now on.
func (l *nameLists) intern(hash uint64, names []string) []string {
	if l == nil || len(names) == 0 {
		return names
	}
	if got, ok := l.lru.Get(hash); ok && slices.Equal(got, names) {
		return got
	}
	l.lru.Put(hash, names)
	return names
}

// forceDependentsLocked makes the type that depends on t (EDS on CDS, RDS
// on LDS) be sent again, so warming clusters and listeners complete. It
// reports whether there was such a type to force.
func (c *conn) forceDependentsLocked(t string) bool {
	dep := ""
	switch t {
	case snapshot.ClusterType:
		dep = snapshot.EndpointType
	case snapshot.ListenerType:
		dep = snapshot.RouteType
	}
	if st := c.types.get(dep); st != nil && st.requested {
		st.force = true
		return true
	}
	return false
}

// setFor returns the set a stream of view v is served for typeURL, and
// whether the type is served at all.
func setFor(snap *snapshot.Snapshot, v snapshot.View, typeURL string) (*snapshot.Set, bool) {
	if !servedType(v, typeURL) {
		return nil, false
	}
	switch typeURL {
	case snapshot.NameTableType:
		return snap.Set(snapshot.ViewNDS, typeURL), true
	case snapshot.PeerType:
		set, err := snap.PeerSet()
		if err != nil {
			return nil, false
		}
		return set, true
	}
	return snap.Set(v, typeURL), true
}

// servedType says whether a stream of view v is served typeURL. A request
// for another type is recorded (it counts against the stream's types) but
// keeps no resource names and is never answered, so made-up types cost a
// client's stream nothing but their count.
func servedType(v snapshot.View, typeURL string) bool {
	switch typeURL {
	case snapshot.NameTableType:
		return true
	case snapshot.ClusterType, snapshot.EndpointType, snapshot.ListenerType, snapshot.RouteType:
		return v != snapshot.ViewPeer
	case snapshot.PeerType:
		return v == snapshot.ViewPeer
	}
	return false
}

// answered records the client's answer to the last response of type t:
// a NACK (kept for status, never re-pushed) or an ACK of version.
func (s *Server) answered(c *conn, st *typeState, t, message string, nack bool, version string) {
	st.awaiting = false
	c.answeredLocked()
	if nack {
		message = s.nackText(message)
		message = s.holdNACK(c, st, message)
		st.nack = &NACK{Version: st.sentVersion, Snapshot: st.sentSnap, Message: message, At: time.Now()}
		s.metrics.nack(t)
		s.log.Warn("config rejected by client", "node", c.node.GetId(), "tenant", c.tenant, "type", t, "version", st.sentVersion, "error", message)
		st.holds = nil // what the client kept of the rejected response is unknown
		return
	}
	st.acked, st.ackedAt = version, time.Now()
	st.holds, st.holdsHash = st.sentRef, st.sentHash
	s.metrics.ack(t, time.Since(st.sentAt))
}

// intern replaces requested names by the snapshot's own strings for the
// same names, so ten thousand streams subscribed to the same clusters keep
// one copy of each name rather than one per stream. Called with c.mu held;
// the store has its own lock.
func (s *Server) intern(c *conn, typeURL string, names []string) []string {
	set, _ := setFor(s.store.Current(c.tenant), c.view, typeURL)
	if set == nil {
		return names
	}
	for i, n := range names {
		if r := set.Get(n); r != nil {
			names[i] = r.Name
		}
	}
	return names
}

// awaitingLocked says a response sent to the stream is not answered yet.
func (c *conn) awaitingLocked() bool {
	for _, e := range c.types {
		if e.st.awaiting {
			return true
		}
	}
	return false
}

// answeredLocked gives back the push slot held for the stream's
// responses once none waits for an answer. Called with c.mu held.
func (c *conn) answeredLocked() {
	if c.held != nil && !c.awaitingLocked() {
		c.held.giveBack()
		c.held = nil
	}
}

// giveBackHeld gives back the push slot the stream holds, as it ends.
func (c *conn) giveBackHeld() {
	c.mu.Lock()
	sl := c.held
	c.held = nil
	c.mu.Unlock()
	if sl != nil {
		sl.giveBack()
	}
}
