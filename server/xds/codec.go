package xds

import (
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
)

// rawMessage is a response already encoded: shared bytes plus the few
// bytes of this stream's nonce. Protobuf lets fields come in any order, so
// appending the nonce field to a shared encoding is a valid message.
type rawMessage struct {
	shared []byte
	tail   []byte
}

func (r *rawMessage) size() int { return len(r.shared) + len(r.tail) }

// codec sends rawMessages and partsMessages as they are and everything
// else as protobuf,
// and decodes a state-of-the-world stream's requests into its
// sotwRequests (request.go). It
// is installed on xdshard's server only (grpc.ForceServerCodecV2).
type codec struct {
	proto encoding.CodecV2
}

func newCodec() *codec { return &codec{proto: encoding.GetCodecV2(proto.Name)} }

func (c *codec) Marshal(v any) (mem.BufferSlice, error) {
	if r, ok := v.(*rawMessage); ok {
		if len(r.tail) == 0 {
			return mem.BufferSlice{mem.SliceBuffer(r.shared)}, nil
		}
		return mem.BufferSlice{mem.SliceBuffer(r.shared), mem.SliceBuffer(r.tail)}, nil
	}
	if p, ok := v.(*partsMessage); ok {
		return p.bufs, nil
	}
	return c.proto.Marshal(v)
}

func (c *codec) Unmarshal(data mem.BufferSlice, v any) error {
	if r, ok := v.(*sotwRequests); ok {
		return r.unmarshal(data, c.proto)
	}
	return c.proto.Unmarshal(data, v)
}

func (c *codec) Name() string { return proto.Name }
