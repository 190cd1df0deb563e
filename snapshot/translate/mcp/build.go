package mcp

import (
	"fmt"
	"maps"
	"slices"

	"github.com/cespare/xxhash/v2"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	mcpv1 "istio.io/api/mcp/v1alpha1"

	"github.com/xdshard/xdshard/internal/cache"
	"github.com/xdshard/xdshard/snapshot"
	"github.com/xdshard/xdshard/snapshot/model"
	"github.com/xdshard/xdshard/snapshot/translate/objcache"
)

// Kinds are the Istio kinds served to istiod. Other kinds istiod asks for
// (EnvoyFilter, Telemetry, WasmPlugin, ...) are answered empty.
var Kinds = []model.Kind{
	model.KindAuthorizationPolicy, model.KindDestinationRule, model.KindGateway, model.KindPeerAuthentication,
	model.KindServiceEntry, model.KindSidecar, model.KindVirtualService, model.KindWorkloadEntry,
}

// Key is the MCP key of an Istio kind: "networking.istio.io/VirtualService".
func Key(k model.Kind) string { return model.Kinds[k].Group + "/" + string(k) }

// Build returns the tenant's MCP sets, one per kind in Kinds (empty when
// the tenant has none): the objects in the tenant's own namespaces, and
// the generated ones. istio-system's objects belong to the istio-system
// tenant, so each object is served by exactly one tenant.
//
// It returns them twice: whole (for an istiod without a revision), and
// partitioned by each object's own istio.io/rev label ("" for none, which
// every istiod reads), so serving picks partitions and never looks inside
// (snapshot.MCPSets). Generated policies carry no revision label: every
// istiod, a canary's too, enforces them.
//
// cache, when set, keeps each input object's encoded resource while the
// object lives. last, when set, is what Build made of the tenant last
// time: a generated object equal to its last one is that resource again,
// and a kind (or partition) whose resources are all its last ones is that
// set again, so istiod's view of an unchanged kind is the same pointer and
// its encoded responses are not made again. The Last returned is for the
// next build.
func Build(v *model.TenantView, generated []*model.Object, cache *Cache, last *Last) (all, byRevision map[string]*snapshot.Set, next *Last, err error) {
	own := map[string]bool{}
	for _, ns := range v.Namespaces {
		own[ns] = true
	}
	byKind := map[model.Kind][]*model.Object{}
	for _, k := range Kinds {
		byKind[k] = append(byKind[k], v.Own[k]...)
	}
	for _, o := range append(slices.Clone(v.VirtualServices), v.DestinationRules...) {
		if own[o.Namespace] {
			byKind[o.Kind] = append(byKind[o.Kind], o)
		}
	}
	made := map[*model.Object]bool{}
	for _, o := range generated {
		if model.Kinds[o.Kind].Istio {
			byKind[o.Kind] = append(byKind[o.Kind], o)
			made[o] = true
		}
	}
	if last == nil {
		last = &Last{}
	}
	next = &Last{generated: map[model.Key]generatedRes{}}
	all, byRevision = make(map[string]*snapshot.Set, len(Kinds)), map[string]*snapshot.Set{}
	set := func(sets, lastSets map[string]*snapshot.Set, key, typeURL string, items []*snapshot.Resource) error {
		if prev := lastSets[key]; prev != nil && sameItems(prev, items) {
			sets[key] = prev
			return nil
		}
		s, err := snapshot.NewSet(typeURL, items)
		sets[key] = s
		return err
	}
	for _, k := range Kinds {
		items := make([]*snapshot.Resource, 0, len(byKind[k]))
		parts := map[string][]*snapshot.Resource{}
		for _, o := range byKind[k] {
			var e Encoded
			if made[o] {
				if g, ok := last.generated[o.Key]; ok && sameGenerated(g.obj, o) {
					e = Encoded{Resource: g.res}
				} else {
					e = encode(o)
				}
				if e.Err == nil {
					next.generated[o.Key] = generatedRes{o, e.Resource}
				}
			} else {
				e = cache.Get(o, encode)
			}
			r, err := e.Resource, e.Err
			if err != nil {
				return nil, nil, nil, err
			}
			items = append(items, r)
			rev := o.Meta.Labels[model.RevisionLabel]
			parts[rev] = append(parts[rev], r)
		}
		if err := set(all, last.all, Key(k), Key(k), items); err != nil {
			return nil, nil, nil, err
		}
		for rev, items := range parts {
			if err := set(byRevision, last.byRevision, snapshot.MCPPartitionKey(Key(k), rev), Key(k), items); err != nil {
				return nil, nil, nil, err
			}
		}
	}
	next.all, next.byRevision = all, byRevision
	return all, byRevision, next, nil
}

// Last is what Build made of a tenant, for its next Build to reuse.
type Last struct {
	all, byRevision map[string]*snapshot.Set
	generated       map[model.Key]generatedRes
}

type generatedRes struct {
	obj *model.Object
	res *snapshot.Resource
}

// sameGenerated tells whether generated object b is a's content again:
// the same spec, labels, annotations and create time, which are all its
// resource is made of.
func sameGenerated(a, b *model.Object) bool {
	if a == b {
		return true // a generated object made once for an unchanged input (ServiceEntries)
	}
	am, ok1 := a.Body.(proto.Message)
	bm, ok2 := b.Body.(proto.Message)
	return ok1 && ok2 && proto.Equal(am, bm) &&
		maps.Equal(a.Meta.Labels, b.Meta.Labels) && maps.Equal(a.Meta.Annotations, b.Meta.Annotations) &&
		a.Meta.CreationTimestamp.Equal(&b.Meta.CreationTimestamp)
}

// sameItems tells whether items are exactly prev's resources, pointer for
// pointer.
func sameItems(prev *snapshot.Set, items []*snapshot.Resource) bool {
	if prev.Len() != len(items) {
		return false
	}
	for _, r := range items {
		if prev.Get(r.Name) != r {
			return false
		}
	}
	return true
}

// Encoded is an object's MCP resource, or why it has none.
type Encoded struct {
	Resource *snapshot.Resource
	Err      error
}

// Cache keeps input objects' encoded resources while they live.
type Cache = objcache.Cache[Encoded]

// NewCache returns an empty Cache.
func NewCache(m *cache.Metrics) *Cache { return objcache.New[Encoded](m) }

func encode(o *model.Object) Encoded {
	r, err := resource(o)
	return Encoded{r, err}
}

// resource wraps an object as istiod reads it. Its version is a hash of
// its spec, labels and annotations, so istiod updates an object only when
// it changed; the create time comes from the object, never from the clock.
// The spec is marshaled once: the version hashes the Any's bytes.
func resource(o *model.Object) (*snapshot.Resource, error) {
	spec, ok := o.Body.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("%s: not an Istio kind", o.Ref())
	}
	body, err := snapshot.Any(spec)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o.Ref(), err)
	}
	h := xxhash.New()
	_, _ = h.Write(body.Value)
	for _, m := range []map[string]string{o.Meta.Labels, o.Meta.Annotations} {
		for _, k := range slices.Sorted(maps.Keys(m)) {
			_, _ = fmt.Fprintf(h, "\x00%s=%s", k, m[k])
		}
		_, _ = h.Write([]byte{1})
	}
	res := &mcpv1.Resource{
		Metadata: &mcpv1.Metadata{
			Name:        o.Namespace + "/" + o.Name,
			Version:     fmt.Sprintf("%016x", h.Sum64()),
			Labels:      o.Meta.Labels,
			Annotations: o.Meta.Annotations,
		},
		Body: body,
	}
	if !o.Meta.CreationTimestamp.IsZero() {
		res.Metadata.CreateTime = timestamppb.New(o.Meta.CreationTimestamp.Time)
	}
	return snapshot.Encode(res.Metadata.Name, res)
}
