package server

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/xdshard/xdshard/snapshot"
)

// sharedNamespace's config goes to every istiod, whatever its revision.
const sharedNamespace = "istio-system"

// mcpServer serves istiod's config-source streams (node metadata
// GENERATOR: api) as ISTIO-WIRE.md describes them: every requested type
// answered, empty when there is nothing; the request's type URL echoed
// exactly; each response the full state of its type across every tenant
// (or, for an istiod with ISTIO_REVISION, the tenants' namespaces labelled
// with that revision, plus istio-system); a type is pushed again only when
// its content changed. A response is encoded once per (type, revision,
// content) and shared by every istiod asking the same.
type mcpServer struct {
	s *Server

	mu    sync.Mutex
	cache map[mcpCacheKey]mcpEntry // latest response per type URL and revision
}

type mcpCacheKey struct{ typeURL, revision string }

type mcpEntry struct {
	content string // what the response was made from
	body    []byte
	version string
	count   int
}

func newMCPServer(s *Server) *mcpServer {
	return &mcpServer{s: s, cache: map[mcpCacheKey]mcpEntry{}}
}

// StreamMCP implements MCPHandler.
func (m *mcpServer) StreamMCP(stream discovery.AggregatedDiscoveryService_StreamAggregatedResourcesServer, first *discovery.DiscoveryRequest) error {
	node := first.GetNode()
	c := newConn(m.s.nextID.Add(1), node, "*", snapshot.ViewMCP, false)
	c.revision = metaString(node, "ISTIO_REVISION")
	m.s.mu.Lock()
	m.s.conns[c] = struct{}{}
	m.s.mu.Unlock()
	m.s.metrics.connected(snapshot.ViewMCP, false, 1)
	defer m.s.unbind(c)
	record := func(c *conn, req *discovery.DiscoveryRequest) error { return m.record(c, req) }
	if err := record(c, first); err != nil {
		return err
	}
	return m.s.serveAll(stream.Context(), c, receive(c, stream.Recv, record), func() error { return m.push(stream, c) })
}

// record applies one istiod request. Its first request for a type is
// initial whatever its nonce (istiod sends a timestamp); later, only a
// request answering the latest response counts, and istiod only ACKs.
func (m *mcpServer) record(c *conn, req *discovery.DiscoveryRequest) error {
	t := req.GetTypeUrl()
	if t == "" {
		return status.Error(codes.InvalidArgument, "request without type_url; MCP requests name a group/version/Kind")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.stateLocked(t)
	if st.nonce != "" && req.ResponseNonce != st.nonce {
		m.s.metrics.stale("mcp")
		return nil
	}
	if st.nonce != "" && st.awaiting {
		m.s.answered(c, st, t, req.GetErrorDetail().GetMessage(), req.ErrorDetail != nil, req.VersionInfo)
	}
	st.requested, st.wildcard = true, true
	return nil
}

func (m *mcpServer) push(stream discovery.AggregatedDiscoveryService_StreamAggregatedResourcesServer, c *conn) error {
	snaps := m.snapshots()
	var sends []*rawMessage
	c.mu.Lock()
	for _, t := range c.orderedTypesLocked() {
		st := c.types[t]
		if !st.requested || st.awaiting {
			continue
		}
		e := m.response(t, c.revision, snaps)
		if e.content == st.sentKey {
			continue
		}
		st.nonce = c.nextNonceLocked()
		st.sentVersion, st.sentKey, st.sentAt, st.awaiting = e.version, e.content, time.Now(), true
		sends = append(sends, &rawMessage{shared: e.body, tail: nonceField(st.nonce)})
	}
	c.mu.Unlock()
	for _, msg := range sends {
		start := time.Now()
		if err := stream.SendMsg(msg); err != nil {
			return err
		}
		m.s.metrics.sent("mcp", msg.size(), time.Since(start))
	}
	return nil
}

func (m *mcpServer) snapshots() []*snapshot.Snapshot {
	var out []*snapshot.Snapshot
	for _, t := range m.s.store.Tenants() {
		if snap := m.s.store.Current(t); snap != nil {
			out = append(out, snap)
		}
	}
	return out
}

// response returns the full state of typeURL for an istiod of revision,
// encoding it only when its content changed since the last time.
func (m *mcpServer) response(typeURL, revision string, snaps []*snapshot.Snapshot) mcpEntry {
	var content strings.Builder
	content.WriteString("mcp;") // never "", which means "nothing sent yet"
	var sets []*snapshot.Set
	for _, snap := range snaps {
		set := snap.Set(snapshot.ViewMCP, typeURL)
		if set.Len() == 0 {
			continue
		}
		sets = append(sets, set)
		fmt.Fprintf(&content, "%s:%s", snap.Tenant, set.Version)
		if revision != "" {
			fmt.Fprintf(&content, ":%v", revisionsOf(snap))
		}
		content.WriteByte(';')
	}
	key := mcpCacheKey{typeURL, revision}
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.cache[key]; ok && e.content == content.String() {
		return e
	}
	var items []*snapshot.Resource
	for i, set := range sets {
		for _, r := range set.Items {
			if revision == "" || servesNamespace(snaps, sets[i], r.Name, revision) {
				items = append(items, r)
			}
		}
	}
	slices.SortFunc(items, func(a, b *snapshot.Resource) int { return strings.Compare(a.Name, b.Name) })
	version := emptyVersion
	if len(sets) > 0 {
		version = fmt.Sprintf("%016x", xxhash.Sum64String(content.String()))
	}
	e := mcpEntry{content: content.String(), body: encodeSotW(typeURL, version, items), version: version, count: len(items)}
	m.cache[key] = e
	return e
}

// servesNamespace reports whether the resource "namespace/name" of set
// goes to an istiod of revision.
func servesNamespace(snaps []*snapshot.Snapshot, set *snapshot.Set, name, revision string) bool {
	ns, _, _ := strings.Cut(name, "/")
	if ns == sharedNamespace {
		return true
	}
	for _, snap := range snaps {
		if snap.Set(snapshot.ViewMCP, set.TypeURL) == set {
			return snap.Revisions[ns] == revision
		}
	}
	return false
}

func revisionsOf(s *snapshot.Snapshot) string {
	keys := make([]string, 0, len(s.Revisions))
	for k := range s.Revisions {
		keys = append(keys, k+"="+s.Revisions[k])
	}
	slices.Sort(keys)
	return strings.Join(keys, ",")
}

var _ MCPHandler = (*mcpServer)(nil)
