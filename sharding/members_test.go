package sharding

import (
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// leasesAt is a Leases with no API server: the tests feed it Leases as
// its informer would, report its renewals, and move its clock.
func leasesAt(now *time.Time) *Leases {
	return &Leases{cfg: LeaseConfig{Duration: 15 * time.Second, Renew: 5 * time.Second, Self: Member{ID: "r0", Addr: "a0"}},
		log: slog.New(slog.NewTextHandler(io.Discard, nil)), leases: map[string]*coordinationv1.Lease{}, changes: make(chan struct{}, 1),
		clock: func() time.Time { return *now }}
}

func lease(id string, renewed time.Time) *coordinationv1.Lease {
	secs := int32(15)
	rt := metav1.NewMicroTime(renewed)
	return &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "xdshard-" + id, Annotations: map[string]string{PeerAddrAnnotation: "addr-" + id}},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: &id, LeaseDurationSeconds: &secs, RenewTime: &rt}}
}

func ids(ms []Member) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.ID)
	}
	return out
}

// TestMembersSurviveTheirStore: while this replica cannot renew its Lease
// (the API server does not answer), the members last known are kept, its
// own included, however stale the Leases grow; once it renews again, the
// others have a lease duration from then to renew theirs before they are
// dropped; a member that does not renew by then is dropped.
func TestMembersSurviveTheirStore(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	now := t0
	l := leasesAt(&now)
	l.renewed(true)
	for _, id := range []string{"r0", "r1", "r2"} {
		l.seen(lease(id, t0), false)
	}
	if got := ids(l.Members()); !slices.Equal(got, []string{"r0", "r1", "r2"}) {
		t.Fatalf("members %v, want r0 r1 r2", got)
	}
	// The API server goes away for 30 s: renewals fail every 5 s.
	for now = t0.Add(5 * time.Second); now.Before(t0.Add(35 * time.Second)); now = now.Add(5 * time.Second) {
		l.renewed(false)
		l.recompute()
		if got := ids(l.Members()); !slices.Equal(got, []string{"r0", "r1", "r2"}) {
			t.Fatalf("at +%v without the API server: members %v, want the last known r0 r1 r2", now.Sub(t0), got)
		}
	}
	// It answers again: r0 renews; the informer still holds the others'
	// Leases from before the outage.
	l.renewed(true)
	l.seen(lease("r0", now), false)
	if got := ids(l.Members()); !slices.Equal(got, []string{"r0", "r1", "r2"}) {
		t.Fatalf("right after the API server came back: members %v, want r0 r1 r2 (the others have a lease duration to renew)", got)
	}
	// r1 renews, r2 never does (it died meanwhile); r0 renews every 5 s.
	back := now
	for now = back.Add(5 * time.Second); now.Before(back.Add(25 * time.Second)); now = now.Add(5 * time.Second) {
		l.renewed(true)
		l.seen(lease("r0", now), false)
		l.seen(lease("r1", now.Add(-time.Second)), false)
	}
	if got := ids(l.Members()); !slices.Equal(got, []string{"r0", "r1"}) {
		t.Fatalf("a lease duration after the API server came back: members %v, want r0 r1 (r2 never renewed)", got)
	}
}

// TestMembersExpireWhileTheStoreAnswers: with the API server answering, a
// Lease not renewed for its duration drops its member.
func TestMembersExpireWhileTheStoreAnswers(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	now := t0
	l := leasesAt(&now)
	l.renewed(true)
	l.seen(lease("r0", t0), false)
	l.seen(lease("r1", t0), false)
	for now = t0.Add(5 * time.Second); now.Before(t0.Add(25 * time.Second)); now = now.Add(5 * time.Second) {
		l.renewed(true)
		l.seen(lease("r0", now), false)
	}
	if got := ids(l.Members()); !slices.Equal(got, []string{"r0"}) {
		t.Fatalf("members %v, want r0 alone: r1's Lease expired while the API server answered", got)
	}
}
