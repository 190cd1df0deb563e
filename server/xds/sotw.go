package xds

import (
	"slices"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"

	"github.com/xdshard/xdshard/snapshot"
)

// StreamAggregatedResources serves a state-of-the-world ADS stream.
func (s *Server) StreamAggregatedResources(stream discovery.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	id, err := s.who(stream.Context())
	if err != nil {
		return err
	}
	first, err := recvFirst(s, stream.Context(), s.opts.EndConn, stream.Recv)
	if err != nil {
		return err
	}
	switch metaString(first.GetNode(), "GENERATOR") {
	case GeneratorAPI:
		return s.refuseMCP()
	case GeneratorEvent:
		caller := metaString(first.GetNode(), "NAMESPACE")
		if id != nil {
			caller = id.Namespace
		}
		return s.streamDebug(stream, first, caller, id)
	}
	reqs := &sotwRequests{}
	recv := func() (*discovery.DiscoveryRequest, error) {
		if err := stream.RecvMsg(reqs); err != nil {
			return nil, err
		}
		return reqs.req, nil
	}
	record := func(c *conn, req *discovery.DiscoveryRequest) error {
		err := s.recordSotWFrom(c, req, reqs)
		reqs.req = nil // recorded: an idle stream keeps no request
		return err
	}
	face := &sotwFace{s: s, stream: stream}
	wake := func(c *conn) bool { return s.mayPushSotW(c, face, reqs.typeURL) }
	return runStream(s, stream.Context(), id, first, false, recv, record, wake, face)
}

// mayPushSotW tells whether the type a request was just recorded for is
// due to be sent now, by the send loop's own rule (due). A request changes
// its own type's state alone, and an ACK repeating the subscription of a
// version still current (nearly every ACK) makes nothing due: the send
// loop is not woken for it, which on a mesh-wide change is one wake-up per
// stream saved. A snapshot published meanwhile wakes the send loop itself.
func (s *Server) mayPushSotW(c *conn, f *sotwFace, typeURL string) bool {
	snap := s.serving(c)
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.types.get(typeURL)
	if st == nil || !st.requested || st.awaiting {
		return false // nothing to send for it until it answers; other types did not change
	}
	if c.view != snapshot.ViewMCP && snap == nil {
		return false // the first build wakes the loop
	}
	return f.due(c, snap, typeURL, st) != nil
}

// recordSotW applies one request to the stream's state: ACK or NACK of the
// last response (told apart by response_nonce and error_detail), and the
// subscription. A request answering an older response is stale and
// ignored; the client will ask again after it sees the newer one.
func (s *Server) recordSotW(c *conn, req *discovery.DiscoveryRequest) error {
	return s.recordSotWFrom(c, req, nil)
}

// recordSotWFrom is recordSotW of a request reqs decoded (or of another,
// the stream's first), telling reqs what the subscription was set from.
func (s *Server) recordSotWFrom(c *conn, req *discovery.DiscoveryRequest, reqs *sotwRequests) error {
	t, err := s.checkRequest(c, req.GetNode(), req.GetTypeUrl())
	if err != nil {
		return err
	}
	if reqs != nil {
		reqs.typeURL = t
	}
	reused := reqs.decoded(req) && reqs.reused // the names of the last applied request, checked then
	if !reused {
		if err := s.checkNames(req.ResourceNames); err != nil {
			return err
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := s.checkTypeLocked(c, t); err != nil {
		return err
	}
	st := c.stateLocked(t)
	initial := st.nonce == "" // nothing sent yet: any nonce (istiod's timestamp) is an initial request
	if !initial && req.ResponseNonce != st.nonce {
		if req.ResponseNonce == "" {
			st.force, st.awaiting = true, false // the client starts over for this type
			c.answeredLocked()
		} else {
			s.metrics.stale(t)
			return nil
		}
	}
	if !initial && req.ResponseNonce == st.nonce && st.awaiting {
		s.answered(c, st, t, req.ErrorDetail.GetMessage(), req.ErrorDetail != nil, req.VersionInfo)
	}
	names := req.ResourceNames
	if !servedType(c.view, t) {
		names = nil // never answered: its names are not kept
	}
	if !reused && (st.sorted == nil || !slices.Equal(names, st.sorted)) {
		b := nameBytes(names)
		if err := s.checkSubscriptionBytesLocked(c, st, b); err != nil {
			return err
		}
		if b < st.subBytes {
			_ = s.take(c, b-st.subBytes)
		}
		c.subBytes += b - st.subBytes
		st.subBytes = b
		// Kept: share the snapshot's strings. An ACK repeating the
		// subscription (every ACK, from Envoy) keeps nothing, so it is
		// not interned.
		names = s.intern(c, t, names)
	}
	subscribe(st, names, !st.requested, func(sorted []string) *nameLists { return s.listsFor(c, t, sorted) })
	st.requested = true
	if initial && req.ResponseNonce == "" {
		s.resumeLocked(c, st, t, req.VersionInfo)
	}
	if reqs.decoded(req) {
		if slices.Equal(names, st.sorted) {
			reqs.remember(t, st.sorted)
		} else {
			reqs.forget(t)
		}
	}
	return nil
}

// resumeLocked takes the version a client names on its first request of
// a wildcard type on a new stream (Envoy and grpc-go name the last version
// they accepted, as the protocol asks) as sent and acknowledged when it is
// the version this stream would be sent: a client reconnecting after its
// replica went away is not sent again what it holds. Only for wildcard
// types whose every response is the whole state (CDS, LDS, the name
// table): a named subscription may have grown since the version was
// accepted (a request whose answer the broken stream lost), and
// the new names' resources would never come. Called with c.mu held.
func (s *Server) resumeLocked(c *conn, st *typeState, t, version string) {
	if version == "" || len(version) > maxVersionBytes || !st.wildcard || len(st.sorted) > 0 || partialType(c.view, t) || !servedType(c.view, t) {
		return
	}
	set, ok := setFor(s.serving(c), c.view, t)
	if !ok {
		return
	}
	if set == nil {
		// Nothing to compare with yet: the tenant's first build, or its
		// snapshot being fetched from its owner (a replica fetches a
		// tenant when its first client of it connects, which is when a
		// failed-over proxy arrives). The client's claim is kept as what
		// it accepted, and the first push decides (resumeDue).
		st.acked = version
		return
	}
	if set.GetVersion() != version {
		return
	}
	s.markResumed(c, st, t, version)
}

// resumeDue decides a resume left to the first push (resumeLocked): the
// client claimed version on a new stream before the tenant's snapshot was
// here. It reports whether the stream was taken as holding set.
func (s *Server) resumeDue(c *conn, st *typeState, t string, set *snapshot.Set) bool {
	if st.nonce != "" || st.acked == "" || st.awaiting || !st.wildcard || len(st.sorted) > 0 {
		return false // not a claim waiting for its snapshot
	}
	if set.GetVersion() != st.acked {
		return false
	}
	s.markResumed(c, st, t, st.acked)
	return true
}

// markResumed takes version as sent to the stream and acknowledged.
func (s *Server) markResumed(c *conn, st *typeState, t, version string) {
	st.nonce = c.nextNonceLocked() // never sent: the client's next answer is to a response it gets later
	st.sentVersion, st.sentSet, st.sentHash, st.sentWild = version, version, st.hash, true
	st.acked, st.ackedAt, st.awaiting = version, time.Now(), false
	s.metrics.resumed.WithLabelValues(typeLabel(t)).Inc()
}

// subscribe sets the names a state-of-the-world request asks for. An empty
// first request is a (legacy) wildcard; "*" is an explicit wildcard. A SotW
// stream keeps its subscription as one sorted slice (no set: every request
// carries the whole list), sorted and hashed only when it changes.
func subscribe(st *typeState, names []string, first bool, lists func(sorted []string) *nameLists) {
	st.wildcard = len(names) == 0 && (first || st.wildcard)
	if st.sorted != nil && slices.Equal(names, st.sorted) {
		return // an ACK repeating the subscription, as Envoy sends it
	}
	sorted := make([]string, 0, len(names))
	for _, n := range names {
		if n == "*" {
			st.wildcard = true
			continue
		}
		sorted = append(sorted, n)
	}
	slices.Sort(sorted)
	sorted = slices.Compact(sorted)
	if st.sorted != nil && slices.Equal(sorted, st.sorted) {
		return
	}
	sorted = slices.Clip(sorted)
	st.setSorted(sorted, lists(sorted))
}

// sotwFace pushes the full state of each changed type.
type sotwFace struct {
	s      *Server
	stream discovery.AggregatedDiscoveryService_StreamAggregatedResourcesServer
}

// due compares what the client was last sent (the set's version and the
// subscription's hash) with what it would be sent now.
func (f *sotwFace) due(c *conn, snap *snapshot.Snapshot, t string, st *typeState) *work {
	set, served := setFor(snap, c.view, t)
	if !served {
		return nil
	}
	if f.s.resumeDue(c, st, t, set) {
		return nil // the client holds it: claimed on its new stream, and the snapshot came since
	}
	v := set.GetVersion()
	if st.nonce != "" && !st.force && v == st.sentSet && st.hash == st.sentHash && st.wildcard == st.sentWild {
		return nil
	}
	w := &work{set: set, names: st.sorted, hash: st.hash, wildcard: st.wildcard, base: f.s.partialBase(c, t, st)}
	if w.base != nil && f.parentDue(c, snap, t) {
		w.base = nil // the CDS (LDS) response sent before it forces every resource
	}
	if v != st.sentSet {
		w.built = snap.Built // a new version: its time in queue is worth measuring
	}
	return w
}

// parentDue tells whether the type t depends on (CDS for EDS, LDS for
// RDS) is due in the same push, before t. Called with c.mu held.
func (f *sotwFace) parentDue(c *conn, snap *snapshot.Snapshot, t string) bool {
	parent := snapshot.ClusterType
	if t == snapshot.RouteType {
		parent = snapshot.ListenerType
	}
	st := c.types.get(parent)
	return st != nil && st.requested && !st.awaiting && f.due(c, snap, parent, st) != nil
}

func (f *sotwFace) encode(w *work) {
	if f.s.testEncodeHook != nil {
		f.s.testEncodeHook()
	}
	w.body, w.version = f.s.cache.sotw(w.typeURL, w.set, w.base, w.names, w.hash, w.wildcard)
}

func (f *sotwFace) commit(c *conn, w *work) any {
	st := w.st
	if w.base != nil && st.force {
		// A CDS (LDS) response committed just before forced this type to
		// carry every resource: pick it again.
		c.signal()
		return nil
	}
	st.nonce = c.nextNonceLocked()
	st.sentVersion, st.sentSet, st.sentHash, st.sentWild = w.version, w.set.GetVersion(), w.hash, w.wildcard
	if partialType(c.view, w.typeURL) {
		st.sentRef = w.set
	}
	if w.base != nil {
		f.s.metrics.partialPush(w.typeURL)
	}
	st.sentAt, st.awaiting, st.force = time.Now(), true, false
	if c.forceDependentsLocked(w.typeURL) {
		c.signal()
	}
	return &rawMessage{shared: w.body, tail: nonceField(st.nonce)}
}

func (f *sotwFace) send(msg any) (int, error) {
	m := msg.(*rawMessage)
	return m.size(), f.stream.SendMsg(m)
}
