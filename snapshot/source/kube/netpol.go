package kube

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/xdshard/xdshard/snapshot"
	"github.com/xdshard/xdshard/snapshot/model"
)

// FieldManager is the server-side apply field manager of what xdshard
// writes.
const FieldManager = "xdshard"

var netpolGVR = schema.GroupVersionResource{Group: "networking.k8s.io", Version: "v1", Resource: "networkpolicies"}

// netpols applies each tenant's generated NetworkPolicies (the snapshot's
// ViewKube) with server-side apply, and deletes those it applied that no
// tenant generates any more, and those in namespaces outside the mesh.
// Nothing is applied outside the mesh, whatever a tenant's last build
// says. mu guards every field; one goroutine (reconcile) talks to the API
// server.
type netpols struct {
	mu      sync.Mutex
	desired map[string]*snapshot.Set // tenant -> its generated NetworkPolicies
	applied map[string]string        // "ns/name" -> version applied
	live    map[string]bool          // "ns/name" of NetworkPolicies labelled as xdshard's, as the informer sees them
	// reported holds the tenants whose builds have been seen (gone ones
	// included): only their NetworkPolicies may be deleted. Until a
	// tenant's first build is seen, what was applied for it stays, so a
	// restart never leaves a namespace without its policy for a moment.
	reported map[string]bool
	wake     chan struct{}
	// told counts the snapshots Built was told of; done is told as of
	// the start of the last reconciliation that ended.
	told uint64
	done atomic.Uint64
}

func newNetpols() *netpols {
	return &netpols{desired: map[string]*snapshot.Set{}, applied: map[string]string{}, live: map[string]bool{}, reported: map[string]bool{}, wake: make(chan struct{}, 1)}
}

// Built implements server.SnapshotSink: it is told of each tenant's new
// snapshot (nil when the tenant is gone). With ApplyNetworkPolicies off it
// does nothing.
func (s *Source) Built(tenant string, snap *snapshot.Snapshot) {
	if !s.cfg.ApplyNetworkPolicies {
		return
	}
	n := s.np
	n.mu.Lock()
	if snap == nil {
		delete(n.desired, tenant)
	} else {
		n.desired[tenant] = snap.Set(snapshot.ViewKube, snapshot.NetworkPolicyKey)
	}
	n.reported[tenant] = true
	n.told++
	n.mu.Unlock()
	n.poke()
}

// Reconciled says every snapshot Built was told of so far has been
// reconciled with the API server: its NetworkPolicies applied, those no
// tenant generates any more deleted (or the failures reported). With
// ApplyNetworkPolicies off it is always true.
func (s *Source) Reconciled() bool {
	n := s.np
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.done.Load() >= n.told
}

// poke has the reconciler look again.
func (n *netpols) poke() {
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// reconcileNetpols applies and deletes until ctx ends, a short while after
// the last change, so a burst of tenant builds costs one pass.
func (s *Source) reconcileNetpols(ctx context.Context) {
	n := s.np
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.wake:
		}
		select { // settle
		case <-ctx.Done():
			return
		case <-time.After(300 * time.Millisecond):
		}
		s.reconcileOnce(ctx)
	}
}

func (s *Source) reconcileOnce(ctx context.Context) {
	n := s.np
	n.mu.Lock()
	told := n.told
	defer func() {
		if ctx.Err() == nil {
			n.done.Store(told)
		}
	}()
	want := map[string]*snapshot.Resource{}
	for _, set := range n.desired {
		if set == nil {
			continue
		}
		for _, r := range set.Items {
			want[r.Name] = r
		}
	}
	applied := maps.Clone(n.applied)
	n.mu.Unlock()
	var apply []*snapshot.Resource
	for _, name := range slices.Sorted(maps.Keys(want)) {
		if !s.inMesh(nsOf(name)) { // a build from before its namespace left the mesh
			delete(want, name)
			continue
		}
		if applied[name] != want[name].Version {
			apply = append(apply, want[name])
		}
	}
	remove := s.unwanted(want)
	for _, r := range apply {
		err := s.applyNetpol(ctx, r)
		n.mu.Lock()
		if err == nil {
			n.applied[r.Name] = r.Version
		}
		n.mu.Unlock()
		key := "kubernetes NetworkPolicy " + r.Name
		if err != nil {
			s.log.Warn("generated NetworkPolicy not applied", "networkpolicy", r.Name, "err", err)
			s.report(key, []snapshot.Diagnostic{{Severity: snapshot.SeverityError, Object: "NetworkPolicy " + r.Name, Namespace: nsOf(r.Name), Origin: Origin,
				Message: fmt.Sprintf("the generated NetworkPolicy could not be applied: %v; a NetworkPolicy of that name that xdshard did not create is never overwritten: rename or delete it", err)}})
		} else {
			s.report(key, nil)
		}
	}
	for _, name := range slices.Sorted(slices.Values(remove)) {
		ns, nm, _ := strings.Cut(name, "/")
		err := s.dyn.Resource(netpolGVR).Namespace(ns).Delete(ctx, nm, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			s.log.Warn("generated NetworkPolicy not deleted", "networkpolicy", name, "err", err)
			continue
		}
		n.mu.Lock()
		delete(n.applied, name)
		n.mu.Unlock()
		s.log.Info("generated NetworkPolicy deleted: no tenant generates it any more", "networkpolicy", name)
	}
}

// applyNetpol server-side applies r, without force: a field another
// manager owns (a user's own NetworkPolicy of the same name) is a
// conflict, never overwritten.
func (s *Source) applyNetpol(ctx context.Context, r *snapshot.Resource) error {
	ns, name, _ := strings.Cut(r.Name, "/")
	ri := s.dyn.Resource(netpolGVR).Namespace(ns)
	if live, err := ri.Get(ctx, name, metav1.GetOptions{}); err == nil && live.GetLabels()[generatedLabel] != "true" {
		return fmt.Errorf("NetworkPolicy %s exists and is not xdshard's (no label %s)", r.Name, generatedLabel)
	}
	force := false
	_, err := ri.Patch(ctx, name, types.ApplyPatchType, r.Body.Value, metav1.PatchOptions{FieldManager: FieldManager, Force: &force})
	if err == nil {
		s.log.Info("generated NetworkPolicy applied", "networkpolicy", r.Name)
	}
	return err
}

func nsOf(name string) string {
	ns, _, _ := strings.Cut(name, "/")
	return ns
}

// unwanted lists xdshard's live NetworkPolicies that no tenant wants,
// among those of tenants whose builds have been seen, and those in
// namespaces outside the mesh: one that left it (or a system namespace an
// earlier xdshard applied one in, issue #25), whose tenant may still be
// there and may never build again.
func (s *Source) unwanted(want map[string]*snapshot.Resource) []string {
	n := s.np
	n.mu.Lock()
	live := slices.Collect(maps.Keys(n.live))
	reported := maps.Clone(n.reported)
	n.mu.Unlock()
	var out []string
	for _, name := range live {
		if want[name] == nil && (!s.inMesh(nsOf(name)) || reported[s.tenantOf(nsOf(name))]) {
			out = append(out, name)
		}
	}
	return out
}

// tenantOf is the tenant of namespace as the model has it: its Namespace
// object's tenant label, else the namespace itself.
func (s *Source) tenantOf(namespace string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return model.TenantOfNamespace(s.served[model.Key{Kind: model.KindNamespace, Name: namespace}], namespace)
}
