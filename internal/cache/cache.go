package cache

import (
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultBytes is the default bound of each byte-bounded cache of a
// replica (serve --cache-bytes, --fetch-cache-bytes, the MCP responses).
const DefaultBytes = 256 << 20

// EntryCost is what an entry costs beside its value: its key, list links
// and map slot.
const EntryCost = 128

// Metrics are one cache's figures, labelled with its name. Bytes and
// evictions are exported only for a cache that has them (an LRU).
type Metrics struct {
	name                  string
	v                     vecs
	hits, misses, evicted prometheus.Counter
	stale                 prometheus.Counter
	bytes, entries        prometheus.Gauge
}

type vecs struct {
	hits, misses, evictions *prometheus.CounterVec
	bytes, entries          *prometheus.GaugeVec
}

func newVecs() vecs {
	return vecs{
		hits:      prometheus.NewCounterVec(prometheus.CounterOpts{Name: "xdshard_cache_hits_total", Help: "Lookups a cache answered, by cache."}, []string{"cache"}),
		misses:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "xdshard_cache_misses_total", Help: "Lookups a cache could not answer (the value was made, or fetched, instead), by cache."}, []string{"cache"}),
		evictions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "xdshard_cache_evictions_total", Help: "Entries a cache let go before they were asked to go: reason bound (the cache was full, least recently used first) or stale (what the entry was made from is gone), by cache."}, []string{"cache", "reason"}),
		bytes:     prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "xdshard_cache_bytes", Help: "Bytes a cache holds (values, and 128 per entry), by cache."}, []string{"cache"}),
		entries:   prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "xdshard_cache_entries", Help: "Entries a cache holds, by cache."}, []string{"cache"}),
	}
}

// NewMetrics are the figures of the cache name, registered on reg (nil:
// kept but not exported). Several caches, or a cache made again, may
// register on one registry.
func NewMetrics(reg prometheus.Registerer, name string) *Metrics {
	v := newVecs()
	if reg != nil {
		v.hits = register(reg, v.hits)
		v.misses = register(reg, v.misses)
		v.evictions = register(reg, v.evictions)
		v.bytes = register(reg, v.bytes)
		v.entries = register(reg, v.entries)
	}
	return &Metrics{name: name, v: v, hits: v.hits.WithLabelValues(name), misses: v.misses.WithLabelValues(name), entries: v.entries.WithLabelValues(name)}
}

// bounded exports the figures only a byte-bounded cache has.
func (m *Metrics) bounded() {
	if m.bytes == nil {
		m.evicted, m.stale = m.v.evictions.WithLabelValues(m.name, "bound"), m.v.evictions.WithLabelValues(m.name, "stale")
		m.bytes = m.v.bytes.WithLabelValues(m.name)
	}
}

func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
	}
	return c
}

// Hit, Miss and Observe let a cache that is not an LRU report.
func (m *Metrics) Hit()  { m.hits.Inc() }
func (m *Metrics) Miss() { m.misses.Inc() }

// Entries sets the entries held, for a cache that does not count bytes.
func (m *Metrics) Entries(n int) { m.entries.Set(float64(n)) }

// Observe sets the bytes and entries held.
func (m *Metrics) Observe(bytes int64, entries int) {
	m.bounded()
	m.bytes.Set(float64(bytes))
	m.entries.Set(float64(entries))
}

// Options make an LRU.
type Options[K comparable, V any] struct {
	// MaxBytes bounds the sum of Size over the entries, plus EntryCost
	// each; past it the least recently used go. The one just put stays,
	// whatever its size, unless Strict.
	MaxBytes int64
	// Strict: the bound holds for the entry just put too (a value kept
	// only in case it is asked for again, which the bound says is too
	// much to keep).
	Strict bool
	// Size is an entry's value's bytes.
	Size func(V) int64
	// Stale, when set, says an entry may go at once: each Put lets go of
	// up to four stale entries from the least recently used end.
	Stale func(K) bool
	// OnEvict, when set, is told of each entry the cache let go (bound or
	// stale; not Remove), with the cache's lock held: it must not call the
	// cache.
	OnEvict func(K, V)
	// Metrics, when set, receive the cache's figures.
	Metrics *Metrics
}

// LRU is a cache bounded by bytes, least recently used first out. Safe for
// concurrent use.
type LRU[K comparable, V any] struct {
	o     Options[K, V]
	mu    sync.Mutex
	bytes int64
	items map[K]*item[K, V]
	head  *item[K, V] // most recent
	tail  *item[K, V]
}

type item[K comparable, V any] struct {
	key        K
	val        V
	size       int64
	prev, next *item[K, V]
}

// New returns an empty LRU.
func New[K comparable, V any](o Options[K, V]) *LRU[K, V] {
	if o.Metrics == nil {
		o.Metrics = NewMetrics(nil, "")
	}
	o.Metrics.bounded()
	return &LRU[K, V]{o: o, items: map[K]*item[K, V]{}}
}

// Get returns k's value, counting a hit or a miss, and marks it used.
func (l *LRU[K, V]) Get(k K) (V, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	it := l.items[k]
	if it == nil {
		l.o.Metrics.Miss()
		var zero V
		return zero, false
	}
	l.o.Metrics.Hit()
	l.unlink(it)
	l.push(it)
	return it.val, true
}

// Peek returns k's value without counting or marking it.
func (l *LRU[K, V]) Peek(k K) (V, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if it := l.items[k]; it != nil {
		return it.val, true
	}
	var zero V
	return zero, false
}

// Has says whether k is kept.
func (l *LRU[K, V]) Has(k K) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.items[k] != nil
}

// Put keeps v under k, most recently used, and lets go of what the bound
// and the stale predicate say.
func (l *LRU[K, V]) Put(k K, v V) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if it := l.items[k]; it != nil {
		l.drop(it)
	}
	it := &item[K, V]{key: k, val: v, size: l.o.Size(v) + EntryCost}
	l.items[k] = it
	l.push(it)
	l.bytes += it.size
	for l.bytes > l.o.MaxBytes && l.tail != nil && (l.tail != it || l.o.Strict) {
		l.evict(l.tail, l.o.Metrics.evicted)
	}
	for i := 0; i < 4 && l.o.Stale != nil && l.tail != nil && l.tail != it && l.o.Stale(l.tail.key); i++ {
		l.evict(l.tail, l.o.Metrics.stale)
	}
	l.o.Metrics.Observe(l.bytes, len(l.items))
}

// Remove lets go of k, if kept, and returns its value.
func (l *LRU[K, V]) Remove(k K) (V, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	it := l.items[k]
	if it == nil {
		var zero V
		return zero, false
	}
	l.drop(it)
	l.o.Metrics.Observe(l.bytes, len(l.items))
	return it.val, true
}

// Bytes is what the entries hold, EntryCost each included.
func (l *LRU[K, V]) Bytes() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.bytes
}

// Len is the entries kept.
func (l *LRU[K, V]) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.items)
}

func (l *LRU[K, V]) evict(it *item[K, V], c prometheus.Counter) {
	l.drop(it)
	c.Inc()
	if l.o.OnEvict != nil {
		l.o.OnEvict(it.key, it.val)
	}
}

func (l *LRU[K, V]) drop(it *item[K, V]) {
	l.unlink(it)
	delete(l.items, it.key)
	l.bytes -= it.size
}

func (l *LRU[K, V]) push(it *item[K, V]) {
	it.prev, it.next = nil, l.head
	if l.head != nil {
		l.head.prev = it
	}
	l.head = it
	if l.tail == nil {
		l.tail = it
	}
}

func (l *LRU[K, V]) unlink(it *item[K, V]) {
	if it.prev != nil {
		it.prev.next = it.next
	} else {
		l.head = it.next
	}
	if it.next != nil {
		it.next.prev = it.prev
	} else {
		l.tail = it.prev
	}
	it.prev, it.next = nil, nil
}
