package xds

import (
	"bytes"
	"encoding/json"
	"fmt"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/xdshard/xdshard/snapshot"
)

// typeKeys names each type in rendered output.
var typeKeys = map[string]string{
	snapshot.ClusterType:   "clusters",
	snapshot.EndpointType:  "endpoints",
	snapshot.ListenerType:  "listeners",
	snapshot.RouteType:     "routes",
	snapshot.NameTableType: "nameTables",
}

// RenderJSON prints a snapshot for people and golden tests: per view, one
// object per type holding its resources in protojson, stable and indented.
// With no views given, every view is printed.
func RenderJSON(s *snapshot.Snapshot, views ...snapshot.View) ([]byte, error) {
	if len(views) == 0 {
		for _, v := range []snapshot.View{snapshot.ViewEnvoy, snapshot.ViewGRPC, snapshot.ViewNDS, snapshot.ViewMCP} {
			if len(s.Views[v]) > 0 {
				views = append(views, v)
			}
		}
	}
	out := map[string]any{"tenant": s.Tenant, "version": s.Version}
	for _, v := range views {
		types := map[string]any{}
		for _, typeURL := range s.TypeURLs(v) {
			items, err := renderSet(s.Views[v][typeURL])
			if err != nil {
				return nil, fmt.Errorf("view %s: %w", v, err)
			}
			key := typeKeys[typeURL]
			if key == "" {
				key = typeURL
			}
			types[key] = items
		}
		out[string(v)] = types
	}
	diags := s.Diagnostics
	if diags == nil {
		diags = []snapshot.Diagnostic{}
	}
	out["diagnostics"] = diags
	raw, err := json.Marshal(out)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		return nil, err
	}
	buf.WriteByte('\n')
	return buf.Bytes(), nil
}

func renderSet(set *snapshot.Set) ([]json.RawMessage, error) {
	items := make([]json.RawMessage, 0, set.Len())
	for _, r := range set.Items {
		b, err := renderAny(r.Body)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", r.Name, err)
		}
		items = append(items, b)
	}
	return items, nil
}

// renderAny decodes an encoded resource; protojson's output is not stable
// across runs in spacing, so it is compacted and re-indented by the caller.
func renderAny(a *anypb.Any) (json.RawMessage, error) {
	m, err := a.UnmarshalNew()
	if err != nil {
		return nil, err
	}
	b, err := protojson.MarshalOptions{UseProtoNames: false}.Marshal(m)
	if err != nil {
		return nil, err
	}
	var c bytes.Buffer
	if err := json.Compact(&c, b); err != nil {
		return nil, err
	}
	return c.Bytes(), nil
}
