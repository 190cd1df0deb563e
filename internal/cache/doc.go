// Package cache is xdshard's one cache abstraction: an LRU bounded by the
// bytes of its entries, with a stale predicate that lets entries go before
// the bound does, and the metrics every cache of the replica reports by
// name (xdshard_cache_hits_total, _misses_total, _evictions_total,
// xdshard_cache_bytes and _entries, labelled cache=NAME). Caches that need
// no eviction (the translation cache, kept while a build uses an entry)
// report through the same metrics with Observe.
package cache
