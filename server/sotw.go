package server

import (
	"fmt"

	"github.com/cespare/xxhash/v2"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"

	"github.com/xdshard/xdshard/snapshot"
)

// StreamAggregatedResources serves a state-of-the-world ADS stream.
func (s *Server) StreamAggregatedResources(stream discovery.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	if metaString(first.GetNode(), "GENERATOR") == GeneratorAPI {
		return s.opts.MCP.StreamMCP(stream, first)
	}
	return runStream(s, stream.Context(), first, false, stream.Recv, s.recordSotW, func(c *conn, snap *snapshot.Snapshot) error {
		return s.pushSotW(stream, c, snap)
	})
}

// recordSotW applies one request to the stream's state: ACK or NACK of the
// last response (told apart by response_nonce and error_detail), and the
// subscription. A request answering an older response is stale and
// ignored; the client will ask again after it sees the newer one.
func (s *Server) recordSotW(c *conn, req *discovery.DiscoveryRequest) error {
	t, err := s.checkRequest(c, req.GetNode(), req.GetTypeUrl())
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.stateLocked(t)
	initial := st.nonce == "" // nothing sent yet: any nonce (istiod's timestamp) is an initial request
	if !initial && req.ResponseNonce != st.nonce {
		if req.ResponseNonce == "" {
			st.force, st.awaiting = true, false // the client starts over for this type
		} else {
			s.metrics.stale(t)
			return nil
		}
	}
	if !initial && req.ResponseNonce == st.nonce && st.awaiting {
		s.answered(c, st, t, req.ErrorDetail.GetMessage(), req.ErrorDetail != nil, req.VersionInfo)
	}
	subscribe(st, s.intern(c, t, req.ResourceNames), !st.requested)
	st.requested = true
	return nil
}

// subscribe sets the names a state-of-the-world request asks for. An empty
// first request is a (legacy) wildcard; "*" is an explicit wildcard.
func subscribe(st *typeState, names []string, first bool) {
	st.wildcard = len(names) == 0 && (first || st.wildcard)
	clear(st.names)
	for _, n := range names {
		if n == "*" {
			st.wildcard = true
			continue
		}
		st.names[n] = struct{}{}
	}
}

// pushSotW sends, in type order, every type whose response differs from
// the last one sent and has no ACK outstanding.
func (s *Server) pushSotW(stream discovery.AggregatedDiscoveryService_StreamAggregatedResourcesServer, c *conn, snap *snapshot.Snapshot) error {
	type out struct {
		msg     *rawMessage
		typeURL string
		built   time.Time
	}
	if snap == nil {
		return nil // the tenant's first build is still running; wait for it
	}
	var sends []out
	now := time.Now()
	c.mu.Lock()
	for _, t := range c.orderedTypesLocked() {
		st := c.types[t]
		if !st.requested || st.awaiting {
			continue
		}
		set, served := setFor(snap, c.view, t)
		if !served {
			continue
		}
		names := st.sortedNames()
		key := subscriptionKey(set.GetVersion(), st.wildcard, names)
		if key == st.sentKey && !st.force {
			continue
		}
		body, version, _ := s.cache.sotw(t, set, names, st.wildcard)
		var built time.Time
		if version != st.sentVersion {
			built = builtAt(snap) // a new version: its time in queue is worth measuring
		}
		st.nonce = c.nextNonceLocked()
		st.sentVersion, st.sentKey, st.sentAt, st.awaiting, st.force = version, key, now, true, false
		c.forceDependentsLocked(t)
		sends = append(sends, out{&rawMessage{shared: body, tail: nonceField(st.nonce)}, t, built})
	}
	c.mu.Unlock()
	for _, o := range sends {
		start := time.Now()
		if !o.built.IsZero() {
			s.metrics.stage("queue", start.Sub(o.built))
		}
		if err := stream.SendMsg(o.msg); err != nil {
			return err
		}
		s.metrics.sent(o.typeURL, o.msg.size(), time.Since(start))
	}
	return nil
}

// subscriptionKey identifies what a response was made from: the set's
// version and the names asked for, hashed, so a stream does not keep its
// whole subscription (hundreds of EDS names) a second time.
func subscriptionKey(version string, wildcard bool, names []string) string {
	h := xxhash.New()
	for _, n := range names {
		_, _ = h.WriteString(n)
		_, _ = h.Write([]byte{0})
	}
	w := ""
	if wildcard {
		w = "*"
	}
	return fmt.Sprintf("%s|%s|%016x", version, w, h.Sum64())
}

func builtAt(snap *snapshot.Snapshot) time.Time {
	if snap == nil {
		return time.Time{}
	}
	return snap.Built
}
