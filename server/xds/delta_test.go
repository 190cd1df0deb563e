package xds

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

type deltaClient struct {
	t      *testing.T
	stream discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
	resps  chan *discovery.DeltaDiscoveryResponse
	tracked
}

func (e *env) delta(ns string) *deltaClient {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	st, err := discovery.NewAggregatedDiscoveryServiceClient(e.conn).DeltaAggregatedResources(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	c := &deltaClient{t: e.t, stream: st, resps: make(chan *discovery.DeltaDiscoveryResponse, 100), tracked: newTracked(e)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			r, err := st.Recv()
			if err != nil {
				close(c.resps)
				return
			}
			c.received.Add(1)
			c.resps <- r
		}
	}()
	e.t.Cleanup(func() { cancel(); <-done })
	return c
}

func (c *deltaClient) send(req *discovery.DeltaDiscoveryRequest) {
	c.t.Helper()
	if req.Node != nil {
		req.Node = c.tagged(req.Node)
	}
	c.requests++
	if err := c.stream.Send(req); err != nil {
		c.t.Fatal(err)
	}
}

func (c *deltaClient) recv() *discovery.DeltaDiscoveryResponse {
	c.t.Helper()
	select {
	case r, ok := <-c.resps:
		if !ok {
			c.t.Fatal("stream closed")
		}
		var anys []*anypb.Any
		for _, x := range r.Resources {
			anys = append(anys, x.Resource)
		}
		validate(c.t, anys)
		return r
	case <-time.After(time.Minute):
		c.t.Fatal("no delta response within a minute (hang check)")
		return nil
	}
}

func (c *deltaClient) none() {
	c.t.Helper()
	none(c.t, &c.tracked, c.resps, func(r *discovery.DeltaDiscoveryResponse) string {
		return fmt.Sprintf("delta %s: %d resources, removed %v", r.TypeUrl, len(r.Resources), r.RemovedResources)
	})
}

func (c *deltaClient) ack(r *discovery.DeltaDiscoveryResponse) {
	c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: r.TypeUrl, ResponseNonce: r.Nonce})
}

func resourceNames(r *discovery.DeltaDiscoveryResponse) []string {
	var out []string
	for _, x := range r.Resources {
		out = append(out, x.Name)
	}
	return out
}

func TestDeltaMissingNameIsRemovedAtOnceAndSentWhenItAppears(t *testing.T) {
	e := newEnv(t)
	e.mesh("a", 1, 0)
	c := e.delta("a")
	c.send(&discovery.DeltaDiscoveryRequest{Node: node("a", nil), TypeUrl: eds, ResourceNamesSubscribe: []string{"a-c1", "a-c2"}})
	r := c.recv()
	if !slices.Equal(resourceNames(r), []string{"a-c1"}) || !slices.Equal(r.RemovedResources, []string{"a-c2"}) {
		t.Fatalf("got %v removed %v; want a-c1 and a-c2 reported removed", resourceNames(r), r.RemovedResources)
	}
	c.ack(r)
	c.none()
	e.mesh("a", 2, 0) // a-c2 appears; a-c1 is unchanged
	r = c.recv()
	if !slices.Equal(resourceNames(r), []string{"a-c2"}) || len(r.RemovedResources) != 0 {
		t.Fatalf("after a-c2 appeared: %v removed %v; want only a-c2", resourceNames(r), r.RemovedResources)
	}
}

func TestDeltaInitialVersionsSkipUpToDateResources(t *testing.T) {
	e := newEnv(t)
	s := e.mesh("a", 2, 0)
	have := map[string]string{}
	for _, x := range s.Set("envoy", cds).Items {
		have[x.Name] = x.Version
	}
	have["a-c3"] = "gone" // held by the client, no longer exists
	c := e.delta("a")
	c.send(&discovery.DeltaDiscoveryRequest{Node: node("a", nil), TypeUrl: cds, InitialResourceVersions: have})
	r := c.recv()
	if len(r.Resources) != 0 || !slices.Equal(r.RemovedResources, []string{"a-c3"}) {
		t.Fatalf("reconnect: resent %v removed %v; want nothing resent and a-c3 removed", resourceNames(r), r.RemovedResources)
	}
}

func TestDeltaWildcardFollowsChangesAndRemovals(t *testing.T) {
	e := newEnv(t)
	e.mesh("a", 2, 0)
	c := e.delta("a")
	c.send(&discovery.DeltaDiscoveryRequest{Node: node("a", nil), TypeUrl: cds})
	r := c.recv()
	if len(r.Resources) != 2 {
		t.Fatalf("wildcard: %v", resourceNames(r))
	}
	c.ack(r)
	e.mesh("a", 1, 1)
	r = c.recv()
	if !slices.Equal(resourceNames(r), []string{"a-c1"}) || !slices.Equal(r.RemovedResources, []string{"a-c2"}) {
		t.Fatalf("change: %v removed %v", resourceNames(r), r.RemovedResources)
	}
	c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: cds, ResponseNonce: r.Nonce, ResourceNamesUnsubscribe: []string{"*"}, ResourceNamesSubscribe: []string{"a-c1"}})
	c.none()
}

// TestDeltaInitialVersionsKeepOnlyWhatIsSubscribed: the versions a client
// says it holds are kept only for the names it subscribes to (counted in
// its budgets there) or, wildcard, until the first response settles them,
// and a version no longer than xdshard's own: 18,000 made-up names with
// 4 KB versions beside one subscribed name leave one entry.
func TestDeltaInitialVersionsKeepOnlyWhatIsSubscribed(t *testing.T) {
	e := newEnv(t)
	e.mesh("a", 2, 0)
	have := map[string]string{"a-c1": strings.Repeat("v", 4096)}
	for i := 0; i < 18000; i++ {
		have[fmt.Sprintf("made-up-%05d", i)] = "1"
	}
	c := e.delta("a")
	c.send(&discovery.DeltaDiscoveryRequest{Node: node("a", nil), TypeUrl: eds, ResourceNamesSubscribe: []string{"a-c1"}, InitialResourceVersions: have})
	r := c.recv()
	if !slices.Equal(resourceNames(r), []string{"a-c1"}) {
		t.Fatalf("sent %v, want a-c1 (the client's 4 KB version is not one xdshard gives)", resourceNames(r))
	}
	e.srv.mu.Lock()
	defer e.srv.mu.Unlock()
	for cn := range e.srv.conns {
		cn.mu.Lock()
		st := cn.types.get(eds)
		explicit, n := st.known != nil, 0
		for _, name := range append([]string{"a-c2"}, slices.Collect(maps.Keys(have))...) {
			if _, ok := st.held(name); ok {
				n++
			}
		}
		cn.mu.Unlock()
		if n != 1 || explicit {
			t.Fatalf("the stream holds %d versions (as a map of its own: %v), want 1 (a-c1's, as sent), kept as the set sent", n, explicit)
		}
	}
}
