package prio

import (
	"sync"
	"testing"
)

// TestRankThenArrival holds the only slot, queues waiters of mixed ranks,
// and checks each release goes to the lowest rank, then the earliest.
func TestRankThenArrival(t *testing.T) {
	s := New(1)
	if w := s.Enter(5); w != nil {
		t.Fatal("the free slot was not taken at once")
	}
	ranks := []int{9, 1, 9, 1, 3}
	ws := make([]*Waiter, len(ranks))
	for i, r := range ranks {
		ws[i] = s.Enter(r)
		if ws[i] == nil {
			t.Fatalf("waiter %d took a slot that is held", i)
		}
	}
	want := []int{1, 3, 4, 0, 2} // rank 1 (in arrival order), 3, then 9s
	for _, i := range want {
		s.Release()
		select {
		case <-ws[i].Ready():
		default:
			t.Fatalf("release went elsewhere: waiter %d (rank %d) not ready", i, ranks[i])
		}
		for j, w := range ws {
			if j != i && w.granted && !contains(want[:indexOf(want, i)], j) {
				t.Fatalf("waiter %d granted out of turn", j)
			}
		}
	}
	if s.Waiting() != 0 {
		t.Fatalf("%d still waiting", s.Waiting())
	}
	s.Release()
	if w := s.Enter(0); w != nil {
		t.Fatal("the slot released last is not free")
	}
}

// TestCancel: a cancelled waiter leaves the queue, and one cancelled after
// it was granted passes its slot on.
func TestCancel(t *testing.T) {
	s := New(1)
	s.Enter(0)
	a, b := s.Enter(2), s.Enter(2)
	s.Cancel(a)
	s.Release()
	select {
	case <-b.Ready():
	default:
		t.Fatal("the slot skipped the waiter behind a cancelled one")
	}
	c := s.Enter(1)
	s.Release() // to c
	s.Cancel(c) // granted: passes the slot back
	if w := s.Enter(0); w != nil {
		t.Fatal("a cancelled grant kept its slot")
	}
}

// TestBound runs many goroutines through a semaphore of three slots and
// checks no more than three hold one at a time.
func TestBound(t *testing.T) {
	s := New(3)
	var mu sync.Mutex
	in, most := 0, 0
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if w := s.Enter(i % 7); w != nil {
				<-w.Ready()
			}
			mu.Lock()
			in++
			most = max(most, in)
			mu.Unlock()
			mu.Lock()
			in--
			mu.Unlock()
			s.Release()
		}()
	}
	wg.Wait()
	if most > 3 {
		t.Fatalf("%d held a slot at once; the bound is 3", most)
	}
	for range 3 {
		if w := s.Enter(0); w != nil {
			t.Fatal("a slot was lost")
		}
	}
}

func contains(xs []int, x int) bool { return indexOf(xs, x) >= 0 }

func indexOf(xs []int, x int) int {
	for i, v := range xs {
		if v == x {
			return i
		}
	}
	return -1
}

// TestRaise: a waiter raised to a better rank is served before those it
// passed; raising to a worse rank changes nothing.
func TestRaise(t *testing.T) {
	s := New(1)
	s.Enter(0)
	a, b := s.Enter(5), s.Enter(5)
	s.Raise(b, 1)
	s.Raise(a, 9)
	s.Release()
	select {
	case <-b.Ready():
	default:
		t.Fatal("the raised waiter was not served first")
	}
	s.Release()
	select {
	case <-a.Ready():
	default:
		t.Fatal("a later release did not reach the other waiter")
	}
}
