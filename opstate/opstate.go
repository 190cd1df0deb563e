package opstate

import (
	"context"
	"fmt"

	"github.com/xdshard/xdshard/snapshot"
)

// Decision is what holds about a tenant until an operator undoes it.
type Decision struct {
	Tenant string
	// Pinned is the version a rollback pinned; nil: none.
	Pinned *snapshot.Snapshot
	// Held is the candidate a rollout took back ("": none), and HeldWhy why.
	Held, HeldWhy string
}

// Empty says nothing is decided: keeping it forgets the tenant.
func (d Decision) Empty() bool { return d.Pinned == nil && d.Held == "" }

// Keeper keeps decisions.
type Keeper interface {
	// Load reads every decision kept. A decision that cannot be read is
	// skipped and reported in errs; the others load.
	Load(ctx context.Context) (ds []Decision, errs []error, err error)
	// Keep stores d, replacing what was kept of its tenant (an empty one
	// removes it).
	Keep(ctx context.Context, d Decision) error
	// Where says where decisions are kept, for logs and errors.
	Where() string
}

// record is a decision as kept: the pinned snapshot apart, encoded.
type record struct {
	Tenant  string `json:"tenant"`
	Pinned  string `json:"pinned,omitempty"` // the pinned version; its snapshot is kept beside
	Held    string `json:"held,omitempty"`
	HeldWhy string `json:"heldWhy,omitempty"`
}

func recordOf(d Decision) record {
	r := record{Tenant: d.Tenant, Held: d.Held, HeldWhy: d.HeldWhy}
	if d.Pinned != nil {
		r.Pinned = d.Pinned.Version
	}
	return r
}

// decision reads a record back, with its pinned snapshot's bytes.
func (r record) decision(pinned []byte) (Decision, error) {
	d := Decision{Tenant: r.Tenant, Held: r.Held, HeldWhy: r.HeldWhy}
	if r.Tenant == "" {
		return d, fmt.Errorf("no tenant named")
	}
	if r.Pinned == "" {
		return d, nil
	}
	snap, err := snapshot.UnmarshalKept(r.Tenant, pinned)
	if err != nil {
		return d, err
	}
	if snap.Version != r.Pinned {
		return d, fmt.Errorf("the kept snapshot of tenant %q is version %s, the pin names %s", r.Tenant, snap.Version, r.Pinned)
	}
	d.Pinned = snap
	return d, nil
}
