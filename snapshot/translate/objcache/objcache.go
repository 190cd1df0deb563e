package objcache

import (
	"runtime"
	"sync"
	"weak"

	"github.com/xdshard/xdshard/internal/cache"
	"github.com/xdshard/xdshard/snapshot/model"
)

// Cache maps live objects to values of type V.
type Cache[V any] struct {
	mu      sync.Mutex
	m       map[weak.Pointer[model.Object]]V
	metrics *cache.Metrics
}

// New returns an empty Cache reporting to m (nil: to nobody).
func New[V any](m *cache.Metrics) *Cache[V] {
	if m == nil {
		m = cache.NewMetrics(nil, "")
	}
	return &Cache[V]{m: map[weak.Pointer[model.Object]]V{}, metrics: m}
}

// Get returns the value kept for o, or computes it with f and keeps it.
// A nil Cache computes every time. f must be a function of o alone.
func (c *Cache[V]) Get(o *model.Object, f func(*model.Object) V) V {
	if c == nil {
		return f(o)
	}
	w := weak.Make(o)
	c.mu.Lock()
	v, ok := c.m[w]
	c.mu.Unlock()
	if ok {
		c.metrics.Hit()
		return v
	}
	c.metrics.Miss()
	v = f(o)
	c.mu.Lock()
	if _, ok := c.m[w]; !ok {
		c.m[w] = v
		runtime.AddCleanup(o, c.drop, w)
	}
	c.metrics.Entries(len(c.m))
	c.mu.Unlock()
	return v
}

func (c *Cache[V]) drop(w weak.Pointer[model.Object]) {
	c.mu.Lock()
	delete(c.m, w)
	c.metrics.Entries(len(c.m))
	c.mu.Unlock()
}

// Len is the objects kept.
func (c *Cache[V]) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
