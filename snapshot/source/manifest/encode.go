package manifest

import (
	"encoding/json"
	"fmt"
	"io"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	"github.com/xdshard/xdshard/snapshot/model"
)

// Encode writes objects as multi-document YAML that Decode reads back (for
// `kubectl apply`, generated fleets and golden files).
func Encode(w io.Writer, objs []*model.Object) error {
	for i, o := range objs {
		doc, err := encodeObject(o)
		if err != nil {
			return fmt.Errorf("%s: %w", o.Ref(), err)
		}
		if i > 0 {
			if _, err := io.WriteString(w, "---\n"); err != nil {
				return err
			}
		}
		if _, err := w.Write(doc); err != nil {
			return err
		}
	}
	return nil
}

func encodeObject(o *model.Object) ([]byte, error) {
	var data []byte
	var err error
	if m, ok := o.Body.(proto.Message); ok {
		spec, err := protojson.Marshal(m)
		if err != nil {
			return nil, err
		}
		meta := o.Meta
		meta.ResourceVersion, meta.Generation = "", 0
		data, err = json.Marshal(map[string]any{
			"apiVersion": o.APIVersion, "kind": string(o.Kind), "metadata": meta, "spec": json.RawMessage(spec),
		})
		if err != nil {
			return nil, err
		}
	} else {
		var generic map[string]any
		if data, err = json.Marshal(o.Body); err != nil {
			return nil, err
		}
		if err := json.Unmarshal(data, &generic); err != nil {
			return nil, err
		}
		generic["apiVersion"], generic["kind"] = o.APIVersion, string(o.Kind)
		delete(generic, "status")
		if md, ok := generic["metadata"].(map[string]any); ok {
			delete(md, "creationTimestamp")
		}
		if data, err = json.Marshal(generic); err != nil {
			return nil, err
		}
	}
	return yaml.JSONToYAML(data)
}
