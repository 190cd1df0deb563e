package sharding

import (
	"context"
	"sync"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/xdshard/xdshard/snapshot"
)

// A canary rollout runs on the tenant's owner, but the tenant's canaries
// are spread over every replica. The owner's stable version, as the peer
// exchange sends it, announces the candidate in rollout
// (snapshot.Snapshot.Candidate); a replica that follows the tenant then
// opens a second stream to the owner, node metadata CANDIDATE "true",
// which is sent the candidate (only what differs from the stable version
// it holds), and serves it to its own canaries
// (snapshot.Store.PublishFetchedCandidate). It answers that stream's
// response only once its canaries have decided (Verdict): an ACK when
// every canary here acknowledged the candidate and it baked here, a NACK
// with the rejection when one rejected it. The owner counts that answer
// as it counts its own canaries, and alone promotes or aborts; its
// stable version then stops announcing the candidate, and the replica
// takes it back from its canaries (promotion arrives as the new stable
// version).

// candidateFollow is a follow's stream of its owner's candidate.
type candidateFollow struct {
	mu        sync.Mutex
	announced string             // the candidate the owner's stable version names ("" none)
	got       *snapshot.Snapshot // the last whole candidate received
	verdict   verdict            // this replica's canaries' verdict on a candidate
	cancel    context.CancelFunc // ends the stream; nil when none runs
	done      chan struct{}
	wake      chan struct{} // capacity one: the stream looks again
}

type verdict struct {
	version  string
	accepted bool
	why      string
}

func (c *candidateFollow) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// wait waits for the candidate stream to end, once its context ended.
func (c *candidateFollow) wait() {
	c.mu.Lock()
	done := c.done
	c.mu.Unlock()
	if done != nil {
		<-done
	}
}

// announced is told the candidate the owner's stable version names, each
// time one is published from follow fl: it starts the candidate stream,
// or ends it and takes the candidate back from the canaries here.
func (f *Fetcher) announced(ctx context.Context, tenant string, fl *follow, version string) {
	c := &fl.cand
	c.mu.Lock()
	defer c.mu.Unlock()
	if version == c.announced {
		return
	}
	c.announced = version
	c.signal()
	if version == "" {
		if c.cancel != nil {
			c.cancel()
			c.cancel = nil
		}
		c.got = nil
		f.store.EndFetchedCandidate(tenant)
		return
	}
	if c.cancel == nil {
		cctx, cancel := context.WithCancel(fl.ctx)
		done := make(chan struct{})
		c.cancel, c.done = cancel, done
		go func() {
			defer close(done)
			f.runCandidate(cctx, tenant, fl)
		}()
	}
	f.installLocked(tenant, c)
}

// installLocked serves the candidate received to the canaries here once
// the owner announces it. A candidate this replica cannot serve (its
// canaries rejected it before) is rejected at once.
func (f *Fetcher) installLocked(tenant string, c *candidateFollow) {
	if c.got == nil || c.got.Version != c.announced {
		return
	}
	if err := f.store.PublishFetchedCandidate(c.got); err != nil && c.verdict.version != c.got.Version {
		c.verdict = verdict{version: c.got.Version, why: err.Error()}
		c.signal()
	}
}

// Verdict is this replica's canaries' verdict on the candidate version of
// tenant fetched from its owner: it answers the owner. A rejection is
// final; an acceptance may still turn into one until it is sent.
func (f *Fetcher) Verdict(tenant, version string, accepted bool, why string) {
	f.mu.Lock()
	fl := f.follows[tenant]
	f.mu.Unlock()
	if fl == nil {
		return
	}
	c := &fl.cand
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.verdict.version == version && (!c.verdict.accepted || accepted) {
		return // told already
	}
	c.verdict = verdict{version, accepted, why}
	c.signal()
}

// runCandidate keeps the candidate stream of tenant until its context
// ends, opening it again after a failure.
func (f *Fetcher) runCandidate(ctx context.Context, tenant string, fl *follow) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := f.candidateStream(ctx, tenant, fl)
		if ctx.Err() != nil {
			return
		}
		f.log.Warn("fetching a tenant's rollout candidate from its owner failed; trying again", "tenant", tenant, "owner", fl.owner.ID, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// candidateStream fetches tenant's candidate and answers each response
// with the canaries' verdict on it.
func (f *Fetcher) candidateStream(ctx context.Context, tenant string, fl *follow) error {
	s, err := discovery.NewAggregatedDiscoveryServiceClient(fl.conn).DeltaAggregatedResources(ctx)
	if err != nil {
		return err
	}
	md, _ := structpb.NewStruct(map[string]any{"TENANT": tenant, "CANDIDATE": "true"})
	first := &discovery.DeltaDiscoveryRequest{
		Node:    &core.Node{Id: PeerNodePrefix + f.self, Metadata: md},
		TypeUrl: snapshot.PeerType, ResourceNamesSubscribe: []string{"*"},
	}
	// The stable version's resources are named, so the owner sends only
	// what the candidate changes.
	items := map[string]*snapshot.Resource{}
	if cur := f.store.Current(tenant); cur != nil {
		if set, err := cur.PeerSet(); err == nil && set != nil {
			first.InitialResourceVersions = map[string]string{}
			for _, r := range set.Items {
				items[r.Name] = r
				first.InitialResourceVersions[r.Name] = r.Version
			}
		}
	}
	if err := s.Send(first); err != nil {
		return err
	}
	c := &fl.cand
	for {
		resp, err := s.Recv()
		if err != nil {
			return err
		}
		for _, r := range resp.Resources {
			items[r.Name] = &snapshot.Resource{Name: r.Name, Version: r.Version, Body: r.Resource}
		}
		for _, n := range resp.RemovedResources {
			delete(items, n)
		}
		f.obs.Received(bodyBytes(resp))
		ack := &discovery.DeltaDiscoveryRequest{TypeUrl: snapshot.PeerType, ResponseNonce: resp.Nonce}
		snap, err := snapshot.FromPeer(tenant, items, f.store.Current(tenant))
		if err != nil {
			// Not a whole candidate yet: the rest follows.
			if err := s.Send(ack); err != nil {
				return err
			}
			continue
		}
		c.mu.Lock()
		c.got = snap
		f.installLocked(tenant, c)
		c.mu.Unlock()
		// Answered once the canaries here decided, or once the owner no
		// longer rolls this version out (it moved to another candidate).
		for {
			c.mu.Lock()
			v, announced := c.verdict, c.announced
			c.mu.Unlock()
			if v.version == snap.Version && !v.accepted {
				ack.ErrorDetail = &status.Status{Code: int32(codes.InvalidArgument), Message: v.why}
				break
			}
			if v.version == snap.Version || announced != "" && announced != snap.Version {
				break
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-c.wake:
			}
		}
		if err := s.Send(ack); err != nil {
			return err
		}
		f.log.Debug("rollout candidate answered", "tenant", tenant, "owner", fl.owner.ID, "version", snap.Version, "rejected", ack.ErrorDetail.GetMessage())
	}
}

// bodyBytes is the body bytes of a response's resources.
func bodyBytes(resp *discovery.DeltaDiscoveryResponse) int {
	n := 0
	for _, r := range resp.Resources {
		n += len(r.GetResource().GetValue())
	}
	return n
}
