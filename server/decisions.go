package server

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/xdshard/xdshard/opstate"
)

// Decisions about tenants (a rollback's pin, a rollout's held candidate)
// are the deployment's: with Config.State they are loaded before the
// first build, so a replica restarted (or every replica) honours them,
// and the tenant's owner keeps each one as it is made. A replica that
// does not own a tenant keeps nothing of it: the owner does, and the
// peer exchange carries its decisions to the others.

// keepDecisions restores the kept decisions into the store and starts
// keeping new ones. Without Config.State it does nothing.
func (r *Replica) keepDecisions(ctx context.Context) error {
	keeper := r.cfg.State
	if keeper == nil {
		return nil
	}
	ds, bad, err := keeper.Load(ctx)
	if err != nil {
		return err
	}
	for _, err := range bad {
		r.log.Error("a kept decision cannot be read; it is ignored", "err", err)
	}
	for _, d := range ds {
		if !r.ringOwns(d.Tenant) {
			// Its owner restores it, and the peer exchange brings it here;
			// kept aside in case this replica comes to build the tenant
			// before it fetched a copy.
			r.keptMu.Lock()
			if r.kept == nil {
				r.kept = map[string]opstate.Decision{}
			}
			r.kept[d.Tenant] = d
			r.keptMu.Unlock()
			continue
		}
		r.restore(d)
	}
	kept := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "xdshard_decisions_kept_total",
		Help: "Decisions about tenants (pins, held candidates) this replica kept beyond its memory (--state-dir, or ConfigMaps), by result: ok, failed (tried again), too_big (held in memory only)."}, []string{"result"})
	r.reg.MustRegister(kept)
	var mu sync.Mutex
	dirty := map[string]bool{}
	wake := make(chan struct{}, 1)
	poke := func() {
		select {
		case wake <- struct{}{}:
		default:
		}
	}
	mark := func(tenant string) {
		mu.Lock()
		dirty[tenant] = true
		mu.Unlock()
		poke()
	}
	r.store.OnDecision(mark)
	// A failed write is tried again with backoff (1 s doubling to 30 s),
	// ten times at most: a directory that cannot be written (a read-only
	// mount) or an API server that refuses costs a log line per try, not
	// one a second for ever. The next decision about the tenant tries
	// again.
	const maxTries = 10
	r.goTracked(func() {
		failures := map[string]int{}
		for {
			select {
			case <-ctx.Done():
				return
			case <-wake:
			}
			mu.Lock()
			todo := dirty
			dirty = map[string]bool{}
			mu.Unlock()
			backoff := time.Duration(0)
			for tenant := range todo {
				if !r.ringOwns(tenant) {
					continue // its owner keeps it
				}
				pinned, held, why := r.store.Decision(tenant)
				err := keeper.Keep(ctx, opstate.Decision{Tenant: tenant, Pinned: pinned, Held: held, HeldWhy: why})
				switch {
				case err == nil:
					delete(failures, tenant)
					kept.WithLabelValues("ok").Inc()
				case errors.Is(err, opstate.ErrTooBig):
					kept.WithLabelValues("too_big").Inc()
					r.log.Error("a decision about a tenant is too big to keep; it holds only while a replica holding it runs", "tenant", tenant, "err", err)
				default:
					kept.WithLabelValues("failed").Inc()
					failures[tenant]++
					if n := failures[tenant]; n >= maxTries {
						delete(failures, tenant)
						r.log.Error("keeping a decision about a tenant failed every try; it holds only while a replica holding it runs, and the next decision about the tenant tries again", "tenant", tenant, "where", keeper.Where(), "tries", n, "err", err)
						continue
					}
					r.log.Warn("keeping a decision about a tenant failed; trying again", "tenant", tenant, "where", keeper.Where(), "err", err)
					mu.Lock()
					dirty[tenant] = true
					mu.Unlock()
					backoff = max(backoff, min(time.Second<<(failures[tenant]-1), 30*time.Second))
				}
			}
			if backoff > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(backoff):
				}
				poke()
			}
		}
	})
	return nil
}

// restore makes a kept decision hold in the store.
func (r *Replica) restore(d opstate.Decision) {
	r.store.Restore(d.Tenant, d.Pinned, d.Held, d.HeldWhy)
	if d.Pinned != nil {
		r.log.Warn("tenant pinned by a kept rollback; newer builds wait until it is unpinned", "tenant", d.Tenant, "version", d.Pinned.Version, "kept", r.cfg.State.Where())
	}
}

// restoreKept restores the decision kept about tenant, which this
// replica is about to build, unless it holds a copy of the tenant already
// (fetched from its owner, whose decisions it carries, and newer).
func (r *Replica) restoreKept(tenant string) {
	r.keptMu.Lock()
	d, ok := r.kept[tenant]
	delete(r.kept, tenant)
	r.keptMu.Unlock()
	if ok && r.store.Current(tenant) == nil {
		r.restore(d)
	}
}
