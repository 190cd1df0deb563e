package xds

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

	"github.com/xdshard/xdshard/internal/cache"
	"github.com/xdshard/xdshard/snapshot"
)

// mcpServer serves istiod's config-source streams (node metadata
// GENERATOR: api) as ISTIO-WIRE.md describes them: every requested type
// answered, empty when there is nothing; the request's type URL echoed
// exactly; each response the full state of its type across every tenant
// (or, for an istiod with ISTIO_REVISION, the partitions of that revision
// and of every revision, which translation made); a type is pushed again
// only when its content changed. A response is encoded once per (type,
// revision, content) and shared by every istiod asking the same.
type mcpServer struct {
	s *Server

	mu    sync.Mutex                        // one response is made at a time
	cache *cache.LRU[mcpCacheKey, mcpEntry] // latest response per type URL and revision
}

type mcpCacheKey struct{ typeURL, revision string }

// mcpMaxTypes bounds the types one istiod stream asks for (a 2026 istiod
// asks for 16). The responses kept for reuse are bounded by
// cache.DefaultBytes, least recently used first out: the keys are what
// istiods ask for.
const mcpMaxTypes = 64

type mcpEntry struct {
	content string // what the response was made from
	body    []byte
	version string
}

func newMCPServer(s *Server) *mcpServer {
	return &mcpServer{s: s, cache: cache.New(cache.Options[mcpCacheKey, mcpEntry]{MaxBytes: cache.DefaultBytes,
		Size: mcpEntry.size, Metrics: cache.NewMetrics(s.opts.Registry, "mcp_responses")})}
}

// StreamMCP implements MCPHandler.
func (m *mcpServer) StreamMCP(stream discovery.AggregatedDiscoveryService_StreamAggregatedResourcesServer, first *discovery.DiscoveryRequest) error {
	node := first.GetNode()
	if err := m.s.checkNodeSize(node); err != nil {
		return err
	}
	c := newConn(m.s.nextID.Add(1), node, "", "*", snapshot.ViewMCP, false)
	c.revision = metaString(node, "ISTIO_REVISION")
	if err := m.s.checkRevision(c.revision); err != nil {
		return err
	}
	m.s.register(c)
	defer m.s.unbind(c)
	record := func(c *conn, req *discovery.DiscoveryRequest) error { return m.record(c, req) }
	if err := record(c, first); err != nil {
		return err
	}
	c.progress.handledFirst()
	return m.s.loop(stream.Context(), c, receive(c, stream.Recv, record, nil), &mcpFace{m: m, revision: c.revision, stream: stream})
}

// record applies one istiod request. Its first request for a type is
// initial whatever its nonce (istiod sends a timestamp); later, only a
// request answering the latest response counts, and istiod only ACKs.
func (m *mcpServer) record(c *conn, req *discovery.DiscoveryRequest) error {
	t := req.GetTypeUrl()
	if t == "" {
		return status.Error(codes.InvalidArgument, "request without type_url; MCP requests name a group/version/Kind")
	}
	if err := m.s.checkRate(c); err != nil {
		return err
	}
	if err := m.s.checkMCPType(t); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.types.get(t) == nil && len(c.types) >= mcpMaxTypes {
		return m.s.refused.refuse("too_many_types", codes.ResourceExhausted, "the stream asks for more than %d MCP types", mcpMaxTypes)
	}
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

// mcpFace pushes each requested type whose content changed. What a type's
// content is can only be told by reading every tenant's snapshot, so every
// requested type is looked at outside the lock (encode) and dropped at
// commit when the istiod has it already.
type mcpFace struct {
	m        *mcpServer
	revision string // the istiod's ISTIO_REVISION
	stream   discovery.AggregatedDiscoveryService_StreamAggregatedResourcesServer
}

func (f *mcpFace) due(*conn, *snapshot.Snapshot, string, *typeState) *work {
	if complete := f.m.s.opts.MCPComplete; complete != nil && !complete() {
		return nil // a partial state would delete the missing tenants' config in istiod
	}
	return &work{}
}

func (f *mcpFace) encode(w *work) {
	e := f.m.response(w.typeURL, f.revision)
	w.body, w.version, w.content = e.body, e.version, e.content
}

func (f *mcpFace) commit(c *conn, w *work) any {
	st := w.st
	if w.content == st.sentSet {
		return nil
	}
	st.nonce = c.nextNonceLocked()
	st.sentVersion, st.sentSet, st.sentAt, st.awaiting = w.version, w.content, time.Now(), true
	return &rawMessage{shared: w.body, tail: nonceField(st.nonce)}
}

func (f *mcpFace) send(msg any) (int, error) {
	m := msg.(*rawMessage)
	return m.size(), f.stream.SendMsg(m)
}

// response returns the full state of typeURL for an istiod of revision,
// encoding it only when its content (the versions of the partitions it is
// made of) changed since the last time.
func (m *mcpServer) response(typeURL, revision string) mcpEntry {
	var content strings.Builder
	content.WriteString("mcp;") // never "", which means "nothing sent yet"
	var sets []*snapshot.Set
	for _, t := range m.s.store.Tenants() {
		for _, set := range m.s.store.Current(t).MCPSets(typeURL, revision) {
			sets = append(sets, set)
			fmt.Fprintf(&content, "%s:%s;", t, set.Version)
		}
	}
	key := mcpCacheKey{typeURL, revision}
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.cache.Get(key); ok && e.content == content.String() {
		return e
	}
	var items []*snapshot.Resource
	for _, set := range sets {
		items = append(items, set.Items...)
	}
	slices.SortFunc(items, func(a, b *snapshot.Resource) int { return strings.Compare(a.Name, b.Name) })
	version := emptyVersion
	if len(sets) > 0 {
		version = fmt.Sprintf("%016x", xxhash.Sum64String(content.String()))
	}
	e := mcpEntry{content: content.String(), body: encodeSotW(typeURL, version, items), version: version}
	m.cache.Put(key, e)
	return e
}

func (e mcpEntry) size() int64 { return int64(len(e.content) + len(e.body) + len(e.version) + 64) }

// cached counts the cached responses.
func (m *mcpServer) cached() int {
	return m.cache.Len()
}

var _ MCPHandler = (*mcpServer)(nil)
