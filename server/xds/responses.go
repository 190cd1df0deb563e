package xds

import (
	"runtime"
	"slices"
	"sync"
	"weak"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/xdshard/xdshard/internal/cache"
	"github.com/xdshard/xdshard/snapshot"
)

// emptyVersion is the version of a type with no resources, so even an
// empty first answer carries a version the client can ACK.
const emptyVersion = "empty"

// Field numbers of envoy.service.discovery.v3.DiscoveryResponse.
const (
	fieldVersionInfo = 1
	fieldResources   = 2
	fieldTypeURL     = 4
	fieldNonce       = 5
)

// responseCache holds each encoded state-of-the-world response once, keyed
// by the set it was made from (weakly, so a replaced snapshot's responses
// go with it) and the subscription's hash. Every stream of a tenant asking
// the same thing shares the same bytes. A hash collision between two
// subscriptions could only give a stream another subset of its own
// tenant's set, never another tenant's resources: the set is in the key.
type responseCache struct {
	entries *cache.LRU[respKey, []byte]

	// bySet lists the keys made from each set still alive; when the
	// garbage collector takes a set, a cleanup drops its responses at once
	// (the LRU's own sweep stops at the first live entry of its old end,
	// and a long soak showed dead responses filling the bound).
	mu    sync.Mutex
	bySet map[weak.Pointer[snapshot.Set]][]respKey
}

// maxKeysPerSet bounds the keys remembered per set: clients choose their
// subscriptions, so the names hashes of one set are theirs to multiply.
// Past it the keys whose responses the LRU dropped are forgotten.
const maxKeysPerSet = 256

type respKey struct {
	set      weak.Pointer[snapshot.Set]
	base     weak.Pointer[snapshot.Set] // a partial response's: the set the client holds
	typeURL  string
	wildcard bool
	names    uint64 // hash of the sorted names
}

// newResponseCache keeps at most maxBytes of responses, least recently
// used first out: the keys are the client's subscriptions, so the cache
// must be bounded whatever clients ask for.
func newResponseCache(maxBytes int64, m *cache.Metrics) *responseCache {
	// An entry is stale once its set is gone, or the set a partial
	// response was made against (no stream holds it any more).
	stale := func(k respKey) bool {
		return k.set.Value() == nil || k.base != (weak.Pointer[snapshot.Set]{}) && k.base.Value() == nil
	}
	size := func(b []byte) int64 { return int64(len(b)) }
	return &responseCache{entries: cache.New(cache.Options[respKey, []byte]{MaxBytes: maxBytes, Size: size, Stale: stale, Metrics: m}),
		bySet: map[weak.Pointer[snapshot.Set]][]respKey{}}
}

// track remembers key under its set, and the first time for a set,
// arranges for its responses to go when the set does.
func (c *responseCache) track(set *snapshot.Set, key respKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	keys, seen := c.bySet[key.set]
	if !seen {
		runtime.AddCleanup(set, c.drop, key.set)
	}
	if len(keys) >= maxKeysPerSet {
		keys = slices.DeleteFunc(keys, func(k respKey) bool { return !c.entries.Has(k) })
	}
	c.bySet[key.set] = append(keys, key)
}

// drop forgets the responses of a set the garbage collector took.
func (c *responseCache) drop(set weak.Pointer[snapshot.Set]) {
	c.mu.Lock()
	keys := c.bySet[set]
	delete(c.bySet, set)
	c.mu.Unlock()
	for _, k := range keys {
		c.entries.Remove(k)
	}
}

// sotw returns the encoded DiscoveryResponse (without nonce) of set's
// resources named in names (sorted; hash is theirs), or all of them for a
// wildcard, for typeURL. set may be nil (empty). Where base is set, the
// response carries only those that differ from base's (partial.go).
func (c *responseCache) sotw(typeURL string, set, base *snapshot.Set, names []string, hash uint64, wildcard bool) (body []byte, version string) {
	key := respKey{typeURL: typeURL, wildcard: wildcard}
	if !wildcard {
		key.names = hash
	}
	version = set.GetVersion()
	if version == "" {
		version = emptyVersion
	}
	if set == nil {
		return encodeSotW(typeURL, version, nil), version
	}
	key.set = weak.Make(set)
	if base != nil && !wildcard {
		key.base = weak.Make(base)
	} else {
		base = nil
	}
	if b, ok := c.entries.Get(key); ok {
		return b, version
	}
	var items []*snapshot.Resource
	if base != nil {
		items = changedItems(set, base, names)
	} else {
		items = selectItems(set, names, wildcard)
	}
	b := encodeSotW(typeURL, version, items)
	c.entries.Put(key, b)
	c.track(set, key)
	return b, version
}

func (c *responseCache) len() int { return c.entries.Len() }

func selectItems(set *snapshot.Set, names []string, wildcard bool) []*snapshot.Resource {
	if wildcard {
		return set.Items
	}
	out := make([]*snapshot.Resource, 0, len(names))
	for _, n := range names {
		if r := set.Get(n); r != nil {
			out = append(out, r)
		}
	}
	return out
}

// encodeSotW encodes a DiscoveryResponse by hand from resources already
// encoded, so no resource is marshaled again.
func encodeSotW(typeURL, version string, items []*snapshot.Resource) []byte {
	size := 0
	for _, r := range items {
		size += 16 + len(r.Body.TypeUrl) + len(r.Body.Value)
	}
	b := make([]byte, 0, size+len(typeURL)+len(version)+16)
	b = protowire.AppendTag(b, fieldVersionInfo, protowire.BytesType)
	b = protowire.AppendString(b, version)
	for _, r := range items {
		b = protowire.AppendTag(b, fieldResources, protowire.BytesType)
		b = protowire.AppendBytes(b, encodeAny(r))
	}
	b = protowire.AppendTag(b, fieldTypeURL, protowire.BytesType)
	return protowire.AppendString(b, typeURL)
}

// encodeAny encodes a google.protobuf.Any (type_url = 1, value = 2).
func encodeAny(r *snapshot.Resource) []byte {
	b := make([]byte, 0, len(r.Body.TypeUrl)+len(r.Body.Value)+8)
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, r.Body.TypeUrl)
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	return protowire.AppendBytes(b, r.Body.Value)
}

// nonceField encodes the nonce field appended to a shared response.
func nonceField(nonce string) []byte {
	b := protowire.AppendTag(make([]byte, 0, len(nonce)+2), fieldNonce, protowire.BytesType)
	return protowire.AppendString(b, nonce)
}
