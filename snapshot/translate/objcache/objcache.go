package objcache

import (
	"runtime"
	"sync"
	"weak"

	"github.com/xdshard/xdshard/snapshot/model"
)

// Cache maps live objects to values of type V.
type Cache[V any] struct {
	mu sync.Mutex
	m  map[weak.Pointer[model.Object]]V
}

// New returns an empty Cache.
func New[V any]() *Cache[V] {
	return &Cache[V]{m: map[weak.Pointer[model.Object]]V{}}
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
		return v
	}
	v = f(o)
	c.mu.Lock()
	if _, ok := c.m[w]; !ok {
		c.m[w] = v
		runtime.AddCleanup(o, c.drop, w)
	}
	c.mu.Unlock()
	return v
}

func (c *Cache[V]) drop(w weak.Pointer[model.Object]) {
	c.mu.Lock()
	delete(c.m, w)
	c.mu.Unlock()
}

// Len is the objects kept.
func (c *Cache[V]) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
