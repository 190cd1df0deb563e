package xds

import (
	"bytes"
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/xdshard/xdshard/snapshot"
)

// named is an xDS message with its resource name.
type named struct {
	name string
	msg  proto.Message
	// For listeners: the route configurations (rds) and clusters (tcp) its
	// filters refer to; for route configurations, the clusters its routes
	// use. Recorded when it is built, so the consistency check need not
	// decode every filter and route again.
	rds, clusters []string
	// sig, when set, names everything the message is made of beside its
	// name: a build whose last build made the same name and sig takes
	// that resource without making the message (see translation.reuse).
	sig string
	// eds: a cluster that takes its endpoints by EDS.
	eds bool
	// res, when set, is the message already validated and encoded (taken
	// from the Cache), and msg is nil: the cache keeps bytes, not trees.
	res *snapshot.Resource
}

// resources are the messages of one tenant before encoding.
type resources struct {
	clusters     []named // Envoy view
	grpcClusters []named // gRPC view
	endpoints    []named // both views
	listeners    []named
	routes       []named
	grpcListen   []named
	grpcRoutes   []named
	nds          []named
}

// validator is what every go-control-plane message implements.
type validator interface{ Validate() error }

// encode validates and encodes every message once, checks that the views
// are consistent, and returns them as sets. Any failure is a bug in the
// translation, never a problem of the user's config.
func (t *translation) encode() (map[snapshot.View]map[string]*snapshot.Set, error) {
	if t.err != nil {
		return nil, t.err
	}
	// A message shared by two views (a cluster both views serve alike) is
	// validated and encoded once.
	done := map[proto.Message]*snapshot.Resource{}
	// With a cache, the tenant's last build's resources: one whose bytes
	// come out the same again is that resource, validated already; and a
	// set whose resources are all its last build's is that set.
	cached := t.opts.Cache != nil
	enc := func(key, typeURL string, items []named) (*snapshot.Set, error) {
		rs := make([]*snapshot.Resource, 0, len(items))
		for _, it := range items {
			if it.res != nil {
				rs = append(rs, it.res)
				continue
			}
			if r := done[it.msg]; r != nil && r.Name == it.name {
				rs = append(rs, r)
				continue
			}
			var k string
			if cached {
				k = madeKey(key, it.name, it.sig)
			}
			r, err := encodeOnce(typeURL, it, t.prev.res[k])
			if err != nil {
				return nil, err
			}
			done[it.msg] = r
			rs = append(rs, r)
			if cached {
				t.made[k] = r
			}
		}
		if prev := t.prev.sets[key]; prev != nil && sameItems(prev, rs) {
			t.sets[key] = prev
			return prev, nil
		}
		set, err := snapshot.NewSet(typeURL, rs)
		if err == nil && cached {
			t.sets[key] = set
		}
		return set, err
	}
	o := &t.out
	if err := checkConsistency(o.clusters, o.endpoints, o.listeners, o.routes); err != nil {
		return nil, fmt.Errorf("envoy view: %w", err)
	}
	if err := checkConsistency(o.grpcClusters, o.endpoints, o.grpcListen, o.grpcRoutes); err != nil {
		return nil, fmt.Errorf("grpc view: %w", err)
	}
	sets := map[string]*snapshot.Set{}
	for _, x := range []struct {
		key, typeURL string
		items        []named
	}{
		{"cds", snapshot.ClusterType, o.clusters}, {"eds", snapshot.EndpointType, o.endpoints},
		{"lds", snapshot.ListenerType, o.listeners}, {"rds", snapshot.RouteType, o.routes},
		{"gcds", snapshot.ClusterType, o.grpcClusters}, {"glds", snapshot.ListenerType, o.grpcListen},
		{"grds", snapshot.RouteType, o.grpcRoutes}, {"nds", snapshot.NameTableType, o.nds},
	} {
		s, err := enc(x.key, x.typeURL, x.items)
		if err != nil {
			return nil, err
		}
		sets[x.key] = s
	}
	if t.opts.Cache != nil {
		t.keep(done)
	}
	return map[snapshot.View]map[string]*snapshot.Set{
		snapshot.ViewEnvoy: {snapshot.ClusterType: sets["cds"], snapshot.EndpointType: sets["eds"], snapshot.ListenerType: sets["lds"], snapshot.RouteType: sets["rds"]},
		snapshot.ViewGRPC:  {snapshot.ClusterType: sets["gcds"], snapshot.EndpointType: sets["eds"], snapshot.ListenerType: sets["glds"], snapshot.RouteType: sets["grds"]},
		snapshot.ViewNDS:   {snapshot.NameTableType: sets["nds"]},
	}, nil
}

// encodeOnce validates and encodes it, unless its bytes are those of
// prev (the same resource in the tenant's last build), which it then is:
// no validation again, and the same pointer.
func encodeOnce(typeURL string, it named, prev *snapshot.Resource) (*snapshot.Resource, error) {
	if prev == nil {
		if err := validateMsg(typeURL, it); err != nil {
			return nil, err
		}
		return snapshot.Encode(it.name, it.msg)
	}
	// Marshalled once: compared with prev's bytes, and kept if they differ.
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(it.msg)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", it.name, err)
	}
	if bytes.Equal(b, prev.Body.GetValue()) {
		return prev, nil
	}
	if err := validateMsg(typeURL, it); err != nil {
		return nil, err
	}
	return snapshot.FromBytes(it.name, prev.Body.GetTypeUrl(), b), nil
}

func validateMsg(typeURL string, it named) error {
	if v, ok := it.msg.(validator); ok {
		if err := v.Validate(); err != nil {
			return fmt.Errorf("%s %q fails validation: %w", typeURL, it.name, err)
		}
	}
	return nil
}

// sameItems tells whether rs are exactly prev's resources, pointer for
// pointer.
func sameItems(prev *snapshot.Set, rs []*snapshot.Resource) bool {
	if prev.Len() != len(rs) {
		return false
	}
	for _, r := range rs {
		if prev.Get(r.Name) != r {
			return false
		}
	}
	return true
}

// madeKey is the key of a resource made outside the Cache's entries in
// the tenant's last build: its set's key, its name and its sig.
func madeKey(setKey, name, sig string) string { return setKey + "\x00" + name + "\x00" + sig }

// reuse is the tenant's last build's resource of setKey, name and sig (nil
// without one, or without a sig): its inputs were the same, so it is, and
// the message need not be made.
func (t *translation) reuse(setKey, name, sig string) *snapshot.Resource {
	if sig == "" || t.opts.Cache == nil {
		return nil
	}
	k := madeKey(setKey, name, sig)
	r := t.prev.res[k]
	if r != nil {
		t.made[k] = r
	}
	return r
}

func sortNamed(items []named) {
	slices.SortFunc(items, func(a, b named) int {
		switch {
		case a.name < b.name:
			return -1
		case a.name > b.name:
			return 1
		}
		return 0
	})
}
