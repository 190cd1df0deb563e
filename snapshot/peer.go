package snapshot

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"
	"google.golang.org/protobuf/types/known/anypb"
)

// A replica that does not own a tenant serves the owner's snapshot, as
// the owner encoded it: the owner sends it over delta xDS as one type,
// PeerType, whose resources are every resource of every view (named
// view, set key and name, separated by PeerSep, bodies untouched) and a
// meta resource that says how to put them together again. Rebuilt from
// them, the snapshot has the owner's version: identical bytes, identical
// versions on every replica.

// ViewPeer is the view a peer stream is served: the whole snapshot as
// one PeerType set.
const ViewPeer View = "peer"

// PeerType is the type URL of the peer exchange.
const PeerType = "type.googleapis.com/xdshard.peer.v1.SnapshotResource"

// PeerNodePrefix starts the node ID a replica fetches a tenant's snapshot
// with: the peer face tells peers from proxies by it.
const PeerNodePrefix = "xdshard-peer~"

// PeerSep separates the parts of a peer resource name; no view, set key
// or resource name holds it.
const PeerSep = "\x1f"

// peerMetaName is the name of the meta resource.
const peerMetaName = PeerSep + "meta"

const peerMetaType = "xdshard.dev/peer/v1/Meta"

// peerMeta is what the meta resource carries.
type peerMeta struct {
	Version     string                     `json:"version"`
	Namespaces  []string                   `json:"namespaces"`
	Diagnostics []Diagnostic               `json:"diagnostics"`
	Built       time.Time                  `json:"built"`
	Sets        map[View]map[string]string `json:"sets"` // view -> set key -> the set's type URL
	// Versions are the sets' versions (view -> set key -> version): a
	// replica whose copy of a set has that version keeps it as it is.
	Versions map[View]map[string]string `json:"versions,omitempty"`
	// Pinned: the owner serves this version as a rollback pinned it.
	Pinned bool `json:"pinned,omitempty"`
	// Candidate is the version the owner rolls out to canaries now.
	Candidate string `json:"candidate,omitempty"`
	// Held is the last candidate the owner took back, and why.
	Held    string `json:"held,omitempty"`
	HeldWhy string `json:"heldWhy,omitempty"`
	// Rollout is the tenant's own rollout setting, so every replica picks
	// the same canaries.
	Rollout RolloutPolicy `json:"rollout,omitzero"`
	// Breadth: see Snapshot.Breadth.
	Breadth int `json:"breadth,omitempty"`
}

// peerCache holds a snapshot's peer set, made once.
type peerCache struct {
	once sync.Once
	set  *Set
	err  error
}

// PeerSet returns the snapshot as one set of PeerType, made once per
// snapshot. Safe on a nil Snapshot (nil).
func (s *Snapshot) PeerSet() (*Set, error) {
	if s == nil {
		return nil, nil
	}
	if s.peer == nil {
		return s.flatten()
	}
	s.peer.once.Do(func() { s.peer.set, s.peer.err = s.flatten() })
	return s.peer.set, s.peer.err
}

func (s *Snapshot) flatten() (*Set, error) {
	meta := peerMeta{Version: s.Version, Namespaces: s.Namespaces, Diagnostics: s.Diagnostics, Built: s.Built, Pinned: s.Pinned,
		Candidate: s.Candidate, Held: s.Held, HeldWhy: s.HeldWhy, Rollout: s.Rollout, Breadth: s.Breadth,
		Sets: map[View]map[string]string{}, Versions: map[View]map[string]string{}}
	var items []*Resource
	for _, v := range slices.Sorted(maps.Keys(s.Views)) {
		meta.Sets[v] = map[string]string{}
		meta.Versions[v] = map[string]string{}
		for _, key := range slices.Sorted(maps.Keys(s.Views[v])) {
			set := s.Views[v][key]
			meta.Sets[v][key] = set.TypeURL
			meta.Versions[v][key] = set.Version
			for _, r := range set.Items {
				if strings.Contains(r.Name, PeerSep) || strings.Contains(key, PeerSep) {
					return nil, fmt.Errorf("resource %q of %s/%s holds the peer separator", r.Name, v, key)
				}
				items = append(items, &Resource{Name: string(v) + PeerSep + key + PeerSep + r.Name, Version: r.Version, Body: r.Body})
			}
		}
	}
	b, err := json.Marshal(meta)
	if err != nil {
		return nil, err
	}
	items = append(items, &Resource{Name: peerMetaName, Version: fmt.Sprintf("%016x", xxhash.Sum64(b)), Body: &anypb.Any{TypeUrl: peerMetaType, Value: b}})
	return NewSet(PeerType, items)
}

// FromPeer rebuilds tenant's snapshot from the peer resources received
// (by name). It fails while they are not a whole snapshot: the meta is
// missing, or the rebuilt version is not the owner's.
//
// prev, the copy held now (or nil), lends the sets whose version the
// owner's meta names unchanged: only changed sets are put together again.
func FromPeer(tenant string, items map[string]*Resource, prev *Snapshot) (*Snapshot, error) {
	m := items[peerMetaName]
	if m == nil {
		return nil, fmt.Errorf("no meta resource yet")
	}
	var meta peerMeta
	if err := json.Unmarshal(m.Body.GetValue(), &meta); err != nil {
		return nil, fmt.Errorf("meta resource: %w", err)
	}
	byView := map[View]map[string][]*Resource{}
	for name, r := range items {
		if prev != nil && len(meta.Versions) > 0 {
			// Only the sets that changed are put together again; skip
			// splitting the names of the others.
			if v, key, ok := peerSetOf(name); ok {
				if old := prev.viewSet(v, key); old != nil && old.Version == meta.Versions[v][key] {
					continue
				}
			}
		}
		if name == peerMetaName {
			continue
		}
		parts := strings.SplitN(name, PeerSep, 3)
		if len(parts) != 3 {
			return nil, fmt.Errorf("peer resource %q is not view, set and name", name)
		}
		v := View(parts[0])
		if byView[v] == nil {
			byView[v] = map[string][]*Resource{}
		}
		byView[v][parts[1]] = append(byView[v][parts[1]], &Resource{Name: parts[2], Version: r.Version, Body: r.Body})
	}
	views := map[View]map[string]*Set{}
	for v, sets := range meta.Sets {
		views[v] = map[string]*Set{}
		for key, typeURL := range sets {
			if old := prev.viewSet(v, key); old != nil && old.TypeURL == typeURL && old.Version == meta.Versions[v][key] {
				views[v][key] = old
				continue
			}
			set, err := NewSet(typeURL, byView[v][key])
			if err != nil {
				return nil, err
			}
			views[v][key] = set
		}
	}
	snap := New(tenant, views, meta.Diagnostics)
	snap.Built = meta.Built
	if len(meta.Namespaces) > 0 {
		snap = snap.WithNamespaces(meta.Namespaces)
	}
	if snap.Version != meta.Version {
		return nil, fmt.Errorf("rebuilt version %s, the owner's is %s: not all resources received yet", snap.Version, meta.Version)
	}
	snap.Pinned, snap.Candidate, snap.Held, snap.HeldWhy, snap.Rollout, snap.Breadth = meta.Pinned, meta.Candidate, meta.Held, meta.HeldWhy, meta.Rollout, meta.Breadth
	return snap, nil
}

// peerSetOf reads the view and set key of a peer resource name.
func peerSetOf(name string) (View, string, bool) {
	v, rest, ok := strings.Cut(name, PeerSep)
	if !ok {
		return "", "", false
	}
	key, _, ok := strings.Cut(rest, PeerSep)
	return View(v), key, ok
}

// viewSet is the set of view at key, nil if none (or s is nil).
func (s *Snapshot) viewSet(v View, key string) *Set {
	if s == nil {
		return nil
	}
	return s.Views[v][key]
}
