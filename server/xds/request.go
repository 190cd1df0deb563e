package xds

import (
	"unicode/utf8"

	"github.com/cespare/xxhash/v2"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

// sotwRequests is a state-of-the-world stream's receive side: the codec
// decodes each request into it (the stream calls RecvMsg with it). Every
// ACK from Envoy repeats the type's whole subscription, about seventy
// names for EDS: decoding them is most of what an ACK costs, and they are
// nearly always the names the stream's subscription was last set from.
// So the request's resource_names are hashed as they come, encoded, and
// where the hash and count are those of the names last applied for the
// type, the request takes that slice (the subscription's own, interned)
// instead of decoding them again: no allocation per name, no UTF-8 check
// of names already checked. Anything else in a request (node,
// error_detail, resource_locators, unknown fields) takes protobuf's own
// decoder, and so does a request this one cannot read.
//
// A hash collision could only make a stream keep its own last names for a
// different list it sent: xxhash is not a defence, but what it guards is
// the client's own subscription. It is used from the stream's receive
// goroutine alone.
type sotwRequests struct {
	req    *discovery.DiscoveryRequest // the request last decoded
	reused bool                        // its names are applied's, not decoded
	hash   uint64                      // of its resource_names as encoded
	count  int                         // how many it names
	// typeURL is the type the last request recorded was for.
	typeURL string
	// applied is, per type, the names the subscription was last set from,
	// when they were its sorted list itself (as Envoy sends them): one
	// entry per type the stream uses, which limits.go bounds.
	applied []appliedNames
}

type appliedNames struct {
	typeURL string
	hash    uint64
	count   int
	names   []string // shared with the type's subscription: never changed
}

// unmarshal decodes data into a new request.
func (r *sotwRequests) unmarshal(data mem.BufferSlice, slow encoding.CodecV2) error {
	r.req, r.reused = &discovery.DiscoveryRequest{}, false
	var b []byte
	if len(data) == 1 {
		b = data[0].ReadOnlyData()
	} else {
		b = data.Materialize()
	}
	if r.fast(b) {
		return nil
	}
	r.req, r.hash, r.count = &discovery.DiscoveryRequest{}, 0, -1
	return slow.Unmarshal(data, r.req)
}

// DiscoveryRequest's fields the fast path reads; any other field sends
// the request to protobuf's decoder.
const (
	reqVersionInfo   = 1
	reqResourceNames = 3
	reqTypeURL       = 4
	reqResponseNonce = 5
)

// fast decodes a request of version_info, resource_names, type_url and
// response_nonce alone, as an ACK is; false for anything else, or where
// protobuf's decoder would report an error.
func (r *sotwRequests) fast(b []byte) bool {
	var version, typeURL, nonce []byte
	count := 0
	// The names' fields (tag, length and bytes: unambiguous) are hashed
	// in one call where they stand back to back, as every encoder writes
	// a repeated field; the same bytes through a streaming digest
	// otherwise, which gives the same hash.
	namesStart, namesEnd, together := 0, 0, true
	for rest := b; len(rest) > 0; {
		num, typ, n := protowire.ConsumeTag(rest)
		if n < 0 || typ != protowire.BytesType {
			return false
		}
		v, m := protowire.ConsumeBytes(rest[n:])
		if m < 0 {
			return false
		}
		switch num {
		case reqVersionInfo, reqTypeURL, reqResponseNonce:
			if !utf8.Valid(v) { // each occurrence, as protobuf checks them, though the last wins
				return false
			}
		}
		switch num {
		case reqVersionInfo:
			version = v
		case reqResourceNames:
			at := len(b) - len(rest)
			switch {
			case count == 0:
				namesStart, namesEnd = at, at+n+m
			case at == namesEnd:
				namesEnd = at + n + m
			default:
				together = false
			}
			count++
		case reqTypeURL:
			typeURL = v
		case reqResponseNonce:
			nonce = v
		default:
			return false
		}
		rest = rest[n+m:]
	}
	if together {
		r.hash = xxhash.Sum64(b[namesStart:namesEnd])
	} else {
		h := xxhash.New()
		for rest := b; len(rest) > 0; {
			num, _, n := protowire.ConsumeTag(rest)
			_, m := protowire.ConsumeBytes(rest[n:])
			if num == reqResourceNames {
				_, _ = h.Write(rest[:n+m])
			}
			rest = rest[n+m:]
		}
		r.hash = h.Sum64()
	}
	r.count = count
	req := r.req
	for _, a := range r.applied {
		if a.typeURL == string(typeURL) { // compared without a copy
			req.TypeUrl = a.typeURL
			if a.hash == r.hash && a.count == count {
				req.ResourceNames, r.reused = a.names, true
			}
			break
		}
	}
	if req.TypeUrl == "" && len(typeURL) > 0 {
		req.TypeUrl = canonicalTypeBytes(typeURL)
	}
	if !r.reused && count > 0 {
		req.ResourceNames = make([]string, 0, count)
		for rest := b; len(rest) > 0; {
			num, _, n := protowire.ConsumeTag(rest)
			v, m := protowire.ConsumeBytes(rest[n:])
			rest = rest[n+m:]
			if num != reqResourceNames {
				continue
			}
			if !utf8.Valid(v) {
				return false
			}
			req.ResourceNames = append(req.ResourceNames, string(v))
		}
	}
	req.VersionInfo, req.ResponseNonce = string(version), string(nonce)
	return true
}

// decoded tells whether req is the request this decoder read last (not
// the stream's first, which gRPC's own Recv read).
func (r *sotwRequests) decoded(req *discovery.DiscoveryRequest) bool {
	return r != nil && r.req == req && r.count >= 0
}

// remember records that the subscription of typeURL was set from req's
// names, which are now sorted, the list itself: the next request with the
// same names takes sorted.
func (r *sotwRequests) remember(typeURL string, sorted []string) {
	for i := range r.applied {
		if r.applied[i].typeURL == typeURL {
			r.applied[i] = appliedNames{typeURL, r.hash, r.count, sorted}
			return
		}
	}
	r.applied = append(r.applied, appliedNames{typeURL, r.hash, r.count, sorted})
}

// forget drops typeURL's entry: the names last applied were not the
// sorted list (or not known), so none is reused.
func (r *sotwRequests) forget(typeURL string) {
	for i := range r.applied {
		if r.applied[i].typeURL == typeURL {
			r.applied = append(r.applied[:i], r.applied[i+1:]...)
			return
		}
	}
}
