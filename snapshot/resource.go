package snapshot

import (
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"github.com/cespare/xxhash/v2"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Resource is one encoded xDS (or MCP, or NDS) resource. It is immutable once
// built: Body's bytes are shared by every response that carries it.
type Resource struct {
	Name    string
	Version string     // content hash of Body
	Body    *anypb.Any // type URL and deterministic encoding
}

// Encode marshals m deterministically into a Resource named name. The
// version is a hash of the bytes, so identical content yields an identical
// version on every replica and every rebuild.
func Encode(name string, m proto.Message) (*Resource, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", name, err)
	}
	typeURL := "type.googleapis.com/" + string(m.ProtoReflect().Descriptor().FullName())
	return FromBytes(name, typeURL, b), nil
}

// FromBytes wraps already-encoded bytes (from another replica, say) as a
// Resource. b must not be modified afterwards.
func FromBytes(name, typeURL string, b []byte) *Resource {
	return &Resource{Name: name, Version: hashBytes(b), Body: &anypb.Any{TypeUrl: typeURL, Value: b}}
}

func hashBytes(b []byte) string {
	var sum [8]byte
	h := xxhash.Sum64(b)
	for i := range sum {
		sum[i] = byte(h >> (56 - 8*i))
	}
	return hex.EncodeToString(sum[:])
}

// Set is every resource of one type in one view of a snapshot, sorted by
// name. It is immutable once built. Get finds a name by binary search in
// Items: no index beside them, which every build and every fetched copy
// would make (a tenth of a sharded replica's mesh-wide change, in a
// profile) and hold.
type Set struct {
	TypeURL string
	Version string // hash over the names and versions of Items; "" for no items
	Items   []*Resource
}

// NewSet builds a Set of typeURL from items. Items are sorted by name; a
// duplicate name is an error, since a client could not tell them apart.
func NewSet(typeURL string, items []*Resource) (*Set, error) {
	sorted := slices.Clone(items)
	if !slices.IsSortedFunc(sorted, byName) { // sorted only when not already
		slices.SortFunc(sorted, byName)
	}
	h := xxhash.New()
	for i, r := range sorted {
		if i > 0 && sorted[i-1].Name == r.Name {
			return nil, fmt.Errorf("%s: two resources named %q", typeURL, r.Name)
		}
		_, _ = h.WriteString(r.Name)
		_, _ = h.Write([]byte{0})
		_, _ = h.WriteString(r.Version)
		_, _ = h.Write([]byte{0})
	}
	s := &Set{TypeURL: typeURL, Items: sorted}
	if len(sorted) > 0 {
		s.Version = fmt.Sprintf("%016x", h.Sum64())
	}
	return s, nil
}

func byName(a, b *Resource) int { return strings.Compare(a.Name, b.Name) }

// MustSet is NewSet for callers that built items with unique names by
// construction; it panics on a duplicate, which is a programming error.
func MustSet(typeURL string, items []*Resource) *Set {
	s, err := NewSet(typeURL, items)
	if err != nil {
		panic(err)
	}
	return s
}

// Get returns the resource named name, or nil. Safe on a nil Set.
func (s *Set) Get(name string) *Resource {
	if s == nil {
		return nil
	}
	if i, ok := slices.BinarySearchFunc(s.Items, name, func(r *Resource, n string) int { return strings.Compare(r.Name, n) }); ok {
		return s.Items[i]
	}
	return nil
}

// Len is the number of resources. Safe on a nil Set.
func (s *Set) Len() int {
	if s == nil {
		return 0
	}
	return len(s.Items)
}

// Names lists the resource names in order. Safe on a nil Set.
func (s *Set) Names() []string {
	if s == nil {
		return nil
	}
	out := make([]string, len(s.Items))
	for i, r := range s.Items {
		out[i] = r.Name
	}
	return out
}

// GetItems returns the resources, sorted by name; nil for a nil set.
func (s *Set) GetItems() []*Resource {
	if s == nil {
		return nil
	}
	return s.Items
}

// GetVersion returns the set's version; "" for a nil set.
func (s *Set) GetVersion() string {
	if s == nil {
		return ""
	}
	return s.Version
}

// Any wraps m in an Any with a deterministic encoding. anypb.New's
// encoding orders map entries at random, which would give identical config
// a new content hash and push it again.
func Any(m proto.Message) (*anypb.Any, error) {
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true}); err != nil {
		return nil, err
	}
	return a, nil
}
