package sharding

import (
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/cespare/xxhash/v2"
)

// Member is one replica: its identity and the address its peers fetch
// snapshots from.
type Member struct {
	ID   string
	Addr string
}

// Ring names the owner of each tenant among members by rendezvous
// (highest-random-weight) hashing: the member with the highest
// hash(member, tenant). Every replica computes it alone from the same
// member list; a member leaving moves only its tenants, a member joining
// takes about 1/N of them. A Ring is immutable.
type Ring struct {
	members []Member // sorted by ID
}

// NewRing returns the ring of members (any order; IDs must be unique).
func NewRing(members []Member) *Ring {
	ms := slices.Clone(members)
	slices.SortFunc(ms, func(a, b Member) int { return strings.Compare(a.ID, b.ID) })
	return &Ring{members: ms}
}

// Members lists the ring's members, by ID.
func (r *Ring) Members() []Member { return slices.Clone(r.members) }

// Owner is the member that builds tenant; ok is false on an empty ring.
func (r *Ring) Owner(tenant string) (Member, bool) {
	var best Member
	var bestScore uint64
	found := false
	for _, m := range r.members {
		if s := score(m.ID, tenant); !found || s > bestScore {
			best, bestScore, found = m, s, true
		}
	}
	return best, found
}

func score(member, tenant string) uint64 {
	h := xxhash.New()
	_, _ = h.WriteString(member)
	_, _ = h.Write([]byte{0})
	_, _ = h.WriteString(tenant)
	return h.Sum64()
}

// ParsePeers reads the static member list of --peers: ID=HOST:PORT,...
func ParsePeers(s string) ([]Member, error) {
	var out []Member
	seen := map[string]bool{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		id, addr, ok := strings.Cut(part, "=")
		if !ok || id == "" {
			return nil, fmt.Errorf("--peers %q: want ID=HOST:PORT,... (e.g. a=10.0.0.1:15012,b=10.0.0.2:15012)", part)
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("--peers: member %s: address %q: %v", id, addr, err)
		}
		if seen[id] {
			return nil, fmt.Errorf("--peers: member %s is listed twice", id)
		}
		seen[id] = true
		out = append(out, Member{ID: id, Addr: addr})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("--peers is empty; list every replica, this one included")
	}
	return out, nil
}
