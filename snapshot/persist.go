package snapshot

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
)

// A snapshot kept beyond the process (a pinned version, which builds no
// longer make once the mesh moved on) is its peer encoding, every view's
// resources and the meta, as one delta xDS response, gzipped: the same
// bytes a replica fetches, so reading it back gives the same version.

// maxKeptBytes bounds what ReadKept inflates.
const maxKeptBytes = 1 << 30

// MarshalKept encodes s to keep it beyond this process.
func MarshalKept(s *Snapshot) ([]byte, error) {
	set, err := s.PeerSet()
	if err != nil {
		return nil, err
	}
	resp := &discovery.DeltaDiscoveryResponse{TypeUrl: PeerType, SystemVersionInfo: s.Version}
	for _, r := range set.Items {
		resp.Resources = append(resp.Resources, &discovery.Resource{Name: r.Name, Version: r.Version, Resource: r.Body})
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(resp)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if _, err := zw.Write(b); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// UnmarshalKept reads back a snapshot of tenant that MarshalKept encoded.
func UnmarshalKept(tenant string, data []byte) (*Snapshot, error) {
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("kept snapshot of tenant %q: %w", tenant, err)
	}
	b, err := io.ReadAll(io.LimitReader(zr, maxKeptBytes+1))
	if err != nil {
		return nil, fmt.Errorf("kept snapshot of tenant %q: %w", tenant, err)
	}
	if len(b) > maxKeptBytes {
		return nil, fmt.Errorf("kept snapshot of tenant %q inflates to more than %d bytes", tenant, maxKeptBytes)
	}
	var resp discovery.DeltaDiscoveryResponse
	if err := proto.Unmarshal(b, &resp); err != nil {
		return nil, fmt.Errorf("kept snapshot of tenant %q: %w", tenant, err)
	}
	items := make(map[string]*Resource, len(resp.Resources))
	for _, r := range resp.Resources {
		items[r.Name] = &Resource{Name: r.Name, Version: r.Version, Body: r.Resource}
	}
	snap, err := FromPeer(tenant, items, nil)
	if err != nil {
		return nil, fmt.Errorf("kept snapshot of tenant %q: %w", tenant, err)
	}
	return snap, nil
}
