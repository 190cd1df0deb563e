package xds

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/xdshard/xdshard/snapshot"
)

// TestNarrowVersionJumpsTheQueue: with the only push slot held, a change
// to both tenants (breadth 2) leaves both streams waiting; a change to b
// alone (breadth 1) made meanwhile makes b's stream pick again and wait
// with the newer version at its rank, so b is sent that version and never
// the broad one it had waited to push, and a still gets the broad one.
func TestNarrowVersionJumpsTheQueue(t *testing.T) {
	e := newEnvWith(t, Options{PushConcurrency: 1, Resolver: ResolverFunc(func(ns string) (string, bool) {
		return ns, ns == "a" || ns == "b"
	})}, nil)
	t.Cleanup(e.close)
	publish := func(tenant string, gen, breadth int) {
		s := e.snapshot(tenant, 2, gen)
		s.Breadth = breadth
		e.store.Publish(s)
	}
	publish("a", 0, 2)
	publish("b", 0, 2)
	ca, cb := e.sotw("a", nil), e.sotw("b", nil)
	for _, c := range []*sotw{ca, cb} {
		c.send(cds, "", "")
		c.ack(c.recv())
	}

	if w := e.srv.pushSem.Enter(0); w != nil {
		t.Fatal("the push slot is taken with nothing to push")
	}
	publish("a", 1, 2)
	publish("b", 1, 2)
	waitFor(t, "both streams to wait for the slot", func() bool { return e.srv.pushSem.Waiting() == 2 })
	publish("b", 2, 1)
	waitFor(t, "b's stream to queue again with its narrow version", func() bool {
		return testutil.ToFloat64(e.srv.metrics.repicked) == 1 && e.srv.pushSem.Waiting() == 2
	})
	e.srv.pushSem.Release()

	rb := cb.recv()
	if want := e.store.Current("b").Set(snapshot.ViewEnvoy, cds).Version; rb.VersionInfo != want {
		t.Fatalf("b was sent version %s, want its narrow version %s", rb.VersionInfo, want)
	}
	ra := ca.recv()
	if want := e.store.Current("a").Set(snapshot.ViewEnvoy, cds).Version; ra.VersionInfo != want {
		t.Fatalf("a was sent version %s, want %s", ra.VersionInfo, want)
	}
	cb.none() // never the broad version b had waited to push
}

// waitFor waits until ok holds; it fails only on a hang.
func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); !ok(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waited a minute for %s (hang check)", what)
		}
	}
}

// TestSlotHeldUntilTheClientAnswers: a stream's push slot is held after
// its sends until its client answers them, so what the server has handed
// to gRPC ahead of its clients is bounded by the slots; a client that does
// not answer gives the slot back slotHold after its sends at the latest.
func TestSlotHeldUntilTheClientAnswers(t *testing.T) {
	e := newEnvWith(t, Options{PushConcurrency: 1, PushSlotUntilAnswered: true, Resolver: ResolverFunc(func(ns string) (string, bool) {
		return ns, ns == "a" || ns == "b"
	})}, nil)
	t.Cleanup(e.close)
	e.srv.slotHold = time.Hour // no clock in the check: held until answered
	e.store.Publish(e.snapshot("a", 2, 0))
	ca := e.sotw("a", nil)
	ca.send(cds, "", "")
	ra := ca.recv()
	// a has not answered: its slot is held, and b's push waits for it.
	if w := e.srv.pushSem.Enter(0); w == nil {
		t.Fatal("the push slot is free while a's response is not answered")
	} else {
		e.srv.pushSem.Cancel(w)
	}
	ca.ack(ra)
	ca.settle(t)
	if w := e.srv.pushSem.Enter(0); w != nil {
		t.Fatal("the push slot is still held once a answered")
	}
	e.srv.pushSem.Release()
}

// TestSlotOfAClientThatDoesNotAnswer: a client that never answers holds
// its push slot slotHold at most; the next stream's push goes.
func TestSlotOfAClientThatDoesNotAnswer(t *testing.T) {
	e := newEnvWith(t, Options{PushConcurrency: 1, PushSlotUntilAnswered: true, Resolver: ResolverFunc(func(ns string) (string, bool) {
		return ns, ns == "a" || ns == "b"
	})}, nil)
	t.Cleanup(e.close)
	e.store.Publish(e.snapshot("a", 2, 0))
	e.store.Publish(e.snapshot("b", 2, 0))
	ca := e.sotw("a", nil)
	ca.send(cds, "", "")
	ca.recv() // not answered, ever
	cb := e.sotw("b", nil)
	cb.send(cds, "", "")
	cb.ack(cb.recv())
}
