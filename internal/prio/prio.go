package prio

import (
	"container/heap"
	"sync"
)

// Sem is a counting semaphore with ranked waiters. The zero value is not
// usable; make one with New.
type Sem struct {
	mu   sync.Mutex
	free int
	q    queue
	seq  uint64
}

// New returns a semaphore of n slots (at least one).
func New(n int) *Sem { return &Sem{free: max(n, 1)} }

// Waiter is a place in the queue, from Enter.
type Waiter struct {
	ready   chan struct{}
	rank    int
	seq     uint64
	index   int // in the heap; -1 once out of it
	granted bool
}

// Ready is closed once the waiter holds a slot.
func (w *Waiter) Ready() <-chan struct{} { return w.ready }

// Enter takes a slot at once when one is free and nobody waits (returning
// nil), or queues for one at rank: wait on the Waiter's Ready, and Cancel
// it if you stop waiting.
func (s *Sem) Enter(rank int) *Waiter {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.free > 0 && len(s.q) == 0 {
		s.free--
		return nil
	}
	s.seq++
	w := &Waiter{ready: make(chan struct{}), rank: rank, seq: s.seq}
	heap.Push(&s.q, w)
	return w
}

// Cancel gives up w's wait. When w was granted a slot meanwhile, the slot
// is released: Cancel leaves the caller holding nothing either way.
func (s *Sem) Cancel(w *Waiter) {
	s.mu.Lock()
	if !w.granted {
		heap.Remove(&s.q, w.index)
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	s.Release()
}

// Raise moves w, while it waits, to rank when that is before its own.
func (s *Sem) Raise(w *Waiter, rank int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !w.granted && rank < w.rank {
		w.rank = rank
		heap.Fix(&s.q, w.index)
	}
}

// Release gives a slot back: to the best-ranked waiter, or free.
func (s *Sem) Release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.q) == 0 {
		s.free++
		return
	}
	w := heap.Pop(&s.q).(*Waiter)
	w.granted = true
	close(w.ready)
}

// Waiting is the number of waiters.
func (s *Sem) Waiting() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.q)
}

// queue is a heap of waiters by rank, then arrival.
type queue []*Waiter

func (q queue) Len() int { return len(q) }
func (q queue) Less(i, j int) bool {
	if q[i].rank != q[j].rank {
		return q[i].rank < q[j].rank
	}
	return q[i].seq < q[j].seq
}
func (q queue) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].index, q[j].index = i, j
}
func (q *queue) Push(x any) {
	w := x.(*Waiter)
	w.index = len(*q)
	*q = append(*q, w)
}
func (q *queue) Pop() any {
	old := *q
	w := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	w.index = -1
	return w
}
