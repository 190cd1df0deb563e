package xds

import (
	"maps"
	"slices"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"

	"github.com/xdshard/xdshard/snapshot"
)

// DeltaAggregatedResources serves an incremental ADS stream.
func (s *Server) DeltaAggregatedResources(stream discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	id, err := s.who(stream.Context())
	if err != nil {
		return err
	}
	first, err := recvFirst(s, stream.Context(), s.opts.EndConn, stream.Recv)
	if err != nil {
		return err
	}
	if metaString(first.GetNode(), "GENERATOR") == GeneratorAPI {
		return s.refuseMCP()
	}
	return runStream(s, stream.Context(), id, first, true, stream.Recv, s.recordDelta, nil, &deltaFace{stream: stream})
}

// recordDelta applies one delta request: ACK/NACK by nonce, subscribe and
// unsubscribe, and on a stream's first request for a type, the versions
// the client already holds (so a reconnecting client that is up to date
// is sent nothing).
func (s *Server) recordDelta(c *conn, req *discovery.DeltaDiscoveryRequest) error {
	t, err := s.checkRequest(c, req.GetNode(), req.GetTypeUrl())
	if err != nil {
		return err
	}
	var initial []string // named only on a stream's first request; no allocation otherwise
	if len(req.InitialResourceVersions) > 0 {
		initial = mapKeys(req.InitialResourceVersions)
	}
	if err := s.checkNames(req.ResourceNamesSubscribe, req.ResourceNamesUnsubscribe, initial); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := s.checkTypeLocked(c, t); err != nil {
		return err
	}
	st := c.stateLocked(t)
	if req.ResponseNonce != "" && st.nonce != "" {
		if req.ResponseNonce != st.nonce {
			s.metrics.stale(t)
			return nil
		}
		if st.awaiting {
			s.answered(c, st, t, req.ErrorDetail.GetMessage(), req.ErrorDetail != nil, st.sentVersion)
		}
	}
	if !servedType(c.view, t) {
		st.requested = true // never answered: its names are not kept
		return nil
	}
	if !st.requested {
		st.requested, st.force = true, true // the first request is always answered
		if len(req.InitialResourceVersions) > 0 {
			st.spell()
		}
		for n, v := range req.InitialResourceVersions {
			if len(v) > maxVersionBytes {
				continue // not a version xdshard gives: the client is sent the resource
			}
			st.known[n] = v
		}
		if len(req.ResourceNamesSubscribe) == 0 {
			st.wildcard = true // legacy wildcard
		}
	}
	if err := s.checkSubscriptionLocked(st, len(req.ResourceNamesSubscribe)); err != nil {
		return err
	}
	reserved := nameBytes(req.ResourceNamesSubscribe)
	if err := s.checkSubscriptionBytesLocked(c, st, st.subBytes+reserved); err != nil {
		return err
	}
	before := st.subBytes
	defer func() { _ = s.take(c, st.subBytes-before-reserved) }() // give back what was reserved and not added
	// names is the subscription while this request changes it: made only
	// for a request that names resources, dropped once sorted holds it.
	var names map[string]struct{}
	edit := func() map[string]struct{} {
		if names == nil {
			names = make(map[string]struct{}, len(st.sorted)+len(req.ResourceNamesSubscribe))
			for _, n := range st.sorted {
				names[n] = struct{}{}
			}
		}
		return names
	}
	changed := st.sorted == nil
	for _, n := range s.intern(c, t, req.ResourceNamesSubscribe) {
		if n == "*" {
			if !st.wildcard {
				st.spell()
			}
			st.wildcard = true
			continue
		}
		if _, had := edit()[n]; !had {
			st.spell()
			names[n] = struct{}{}
			st.subBytes += nameHeld(n)
			c.subBytes += nameHeld(n)
			delete(st.toldMissing, n) // a re-subscription is answered again
			changed = true
		}
	}
	if len(req.ResourceNamesUnsubscribe) > 0 {
		st.spell()
	}
	for _, n := range req.ResourceNamesUnsubscribe {
		if n == "*" {
			st.wildcard = false
			continue
		}
		if _, had := edit()[n]; had {
			delete(names, n)
			st.subBytes -= nameHeld(n)
			c.subBytes -= nameHeld(n)
			changed = true
		}
		delete(st.known, n)
		delete(st.toldMissing, n)
	}
	if len(req.InitialResourceVersions) > 0 && !st.wildcard {
		for n := range st.known {
			if _, named := edit()[n]; !named {
				delete(st.known, n) // kept only for what it subscribes to (counted there)
			}
		}
	}
	if changed {
		sorted := make([]string, 0, len(edit())) // exact: held for the stream's life
		for n := range names {
			sorted = append(sorted, n)
		}
		slices.Sort(sorted)
		st.setSorted(sorted, s.listsFor(c, t, sorted))
	}
	return nil
}

// deltaFace pushes each type's changed and removed resources. Its
// resources are encoded in the snapshot already, so what is sent is worked
// out when it is committed, under the stream's lock, against what the
// client holds then.
type deltaFace struct {
	stream discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesServer
}

func (f *deltaFace) due(c *conn, snap *snapshot.Snapshot, t string, st *typeState) *work {
	set, served := setFor(snap, c.view, t)
	if !served {
		return nil
	}
	if st.nonce != "" && !st.force && set.GetVersion() == st.sentSet && st.hash == st.sentHash && st.wildcard == st.sentWild {
		return nil // the client holds this set for this subscription
	}
	return &work{set: set, hash: st.hash, wildcard: st.wildcard}
}

func (f *deltaFace) encode(*work) {}

func (f *deltaFace) commit(c *conn, w *work) any {
	st := w.st
	st.sentSet, st.sentHash, st.sentWild = w.set.GetVersion(), w.hash, w.wildcard
	resp := deltaChanges(st, w.set)
	if len(resp.Resources) == 0 && len(resp.RemovedResources) == 0 && !st.force {
		return nil
	}
	resp.TypeUrl = w.typeURL
	resp.SystemVersionInfo = w.set.GetVersion()
	resp.Nonce = c.nextNonceLocked()
	st.nonce, st.sentVersion, st.sentAt, st.awaiting, st.force = resp.Nonce, w.set.GetVersion(), time.Now(), true, false
	if len(resp.Resources) > 0 && c.forceDependentsLocked(w.typeURL) {
		c.signal()
	}
	return resp
}

func (f *deltaFace) send(msg any) (int, error) {
	r := msg.(*discovery.DeltaDiscoveryResponse)
	size := 0
	for _, x := range r.Resources {
		size += len(x.GetResource().GetValue())
	}
	if w := deltaWire(r); w != nil {
		return size, f.stream.SendMsg(w)
	}
	return size, f.stream.Send(r)
}

// deltaChanges computes what the client lacks and what it must drop, and
// records that it will have it. A subscribed name that does not exist is
// reported removed at once, so the client need not wait out a timeout; it
// stays subscribed and is sent when it appears.
func deltaChanges(st *typeState, set *snapshot.Set) *discovery.DeltaDiscoveryResponse {
	resp := &discovery.DeltaDiscoveryResponse{}
	send := func(r *snapshot.Resource) {
		if v, ok := st.held(r.Name); ok && v == r.Version {
			return
		}
		if st.known != nil {
			st.known[r.Name] = r.Version
		}
		delete(st.toldMissing, r.Name)
		resp.Resources = append(resp.Resources, &discovery.Resource{Name: r.Name, Version: r.Version, Resource: r.Body})
	}
	missing := func(n string) {
		if st.toldMissing == nil {
			st.toldMissing = map[string]bool{}
		}
		st.toldMissing[n] = true
	}
	if st.wildcard && set != nil {
		for _, r := range set.Items {
			send(r)
		}
	}
	for _, n := range st.sorted {
		if r := set.Get(n); r != nil {
			if !st.wildcard {
				send(r)
			}
		} else if _, has := st.held(n); !has && !st.toldMissing[n] {
			missing(n)
			resp.RemovedResources = append(resp.RemovedResources, n)
		}
	}
	drop := func(n string) {
		if set.Get(n) != nil {
			return
		}
		named := st.named(n)
		if !named && !st.wildcard {
			return
		}
		if st.known != nil {
			delete(st.known, n)
		}
		if named {
			missing(n)
		}
		resp.RemovedResources = append(resp.RemovedResources, n)
	}
	if st.known != nil {
		for _, n := range slices.Sorted(maps.Keys(st.known)) {
			drop(n)
		}
	} else if st.level != nil {
		for _, r := range st.level.Items { // sorted by name
			drop(r.Name)
		}
	}
	st.levelled(set)
	return resp
}

// maxVersionBytes bounds a version the client says it holds: xdshard's
// are short hashes, so a longer one is not kept (the resource is sent).
const maxVersionBytes = 128

func mapKeys(m map[string]string) []string {
	return slices.Collect(maps.Keys(m))
}
