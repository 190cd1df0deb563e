package manifest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	k8sjson "sigs.k8s.io/json"

	"github.com/xdshard/xdshard/snapshot"
	"github.com/xdshard/xdshard/snapshot/model"
)

// Decoded is one document's result: an object, or a diagnostic, or both
// (an object decoded with a warning).
type Decoded struct {
	Object *model.Object
	Diag   *snapshot.Diagnostic
	// Hash identifies the document's content, to tell an edited object
	// from an unchanged one without comparing typed objects.
	Hash string
	// Key is set when the header (kind, namespace, name) could be read, even
	// if the body could not: a watcher keeps that key's last good object.
	Key *model.Key
}

// Decode reads every document of one file with the default limits. file
// names the origin in diagnostics. It never panics, whatever data holds.
func Decode(file string, data []byte) []Decoded { return DecodeWith(file, data, Limits{}) }

// DecodeWith is Decode with limits: a document larger than
// limits.DocumentBytes once its YAML aliases are expanded is a diagnostic,
// found before anything is expanded.
func DecodeWith(file string, data []byte, limits Limits) (out []Decoded) {
	return decodeStream(file, data, limits, "the rest of this file is skipped", 0)
}

// decodeStream decodes every document of data; skipped says what an
// invalid document costs (the rest of the file, or only itself when the
// file was split into its documents first). offset is the line data
// starts after in its file: every line reported is shifted by it.
func decodeStream(file string, data []byte, limits Limits, skipped string, offset int) (out []Decoded) {
	limits = limits.withDefaults()
	defer func() {
		if r := recover(); r != nil {
			out = append(out, Decoded{Diag: ptr(model.Problem(model.Origin{File: file}, nil, fmt.Sprintf("could not decode (internal error: %v); please report this file", r)))})
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			msg := err.Error()
			if offset > 0 {
				msg = yamlLineRE.ReplaceAllStringFunc(msg, func(m string) string {
					n, _ := strconv.Atoi(m[len("line "):])
					return "line " + strconv.Itoa(n+offset)
				})
			}
			return append(out, Decoded{Diag: ptr(model.Problem(model.Origin{File: file, Line: yamlErrLine(err) + offset}, nil, "invalid YAML: "+msg+"; "+skipped))})
		}
		if offset > 0 {
			shiftLines(&doc, offset)
		}
		if d, ok := decodeDoc(file, &doc, limits); ok {
			out = append(out, d)
		}
	}
}

var yamlLineRE = regexp.MustCompile(`line (\d+)`)

// shiftLines moves a parsed document's nodes down by offset lines. An
// alias is reached through its anchor's own place in the tree only, so
// each node moves once.
func shiftLines(n *yaml.Node, offset int) {
	n.Line += offset
	for _, c := range n.Content {
		shiftLines(c, offset)
	}
}

func yamlErrLine(err error) int {
	if m := yamlLineRE.FindStringSubmatch(err.Error()); m != nil {
		n := 0
		_, _ = fmt.Sscanf(m[1], "%d", &n)
		return n
	}
	return 0
}

// header is the part of every manifest read before its kind is known.
type header struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   metav1.ObjectMeta `json:"metadata"`
}

func decodeDoc(file string, doc *yaml.Node, limits Limits) (Decoded, bool) {
	root := doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return Decoded{}, false
		}
		root = root.Content[0]
	}
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return Decoded{}, false // an empty document between separators
	}
	origin := model.Origin{File: file, Line: root.Line}
	fail := func(key *model.Key, line int, format string, args ...any) (Decoded, bool) {
		d := model.Problem(model.Origin{File: file, Line: line}, key, fmt.Sprintf(format, args...))
		return Decoded{Diag: &d, Key: key}, true
	}
	if root.Kind != yaml.MappingNode {
		return fail(nil, root.Line, "document is a %s, want a Kubernetes object (a mapping with apiVersion, kind, metadata)", nodeKind(root))
	}
	if n := expandedSize(root, limits.DocumentBytes); n > limits.DocumentBytes {
		return fail(nil, root.Line, "document is more than %d bytes once its YAML aliases are expanded (the limit is %d); remove the aliases (&anchor / *alias) or split the document", n-1, limits.DocumentBytes)
	}
	data, plain := nodeJSON(make([]byte, 0, 1024), root, 0)
	if !plain {
		var generic any
		if err := root.Decode(&generic); err != nil {
			return fail(nil, root.Line, "invalid YAML: %v", err)
		}
		var err error
		if data, err = json.Marshal(jsonable(generic)); err != nil {
			return fail(nil, root.Line, "cannot be represented as JSON: %v", err)
		}
	}
	var h header
	env := istioEnvelope(root, data)
	if env != nil {
		h = header{APIVersion: env.APIVersion, Kind: env.Kind, Metadata: env.Metadata}
	} else if err := json.Unmarshal(data, &h); err != nil {
		return fail(nil, lineOf(root, "metadata"), "bad header: %v", err)
	}
	kind, err := model.KindFor(h.APIVersion, h.Kind)
	if err != nil {
		return fail(nil, lineOf(root, "kind"), "%v", err)
	}
	info := model.Kinds[kind]
	key := model.Key{Kind: kind, Namespace: h.Metadata.Namespace, Name: h.Metadata.Name}
	if !info.Namespaced {
		key.Namespace = ""
	}
	if msg := checkNames(info, h.Metadata); msg != "" {
		return fail(nil, lineOf(root, "metadata"), "%s %s: %s", kind, displayName(h.Metadata), msg)
	}
	obj := &model.Object{Key: key, APIVersion: h.APIVersion, Meta: h.Metadata, Origin: origin}
	if info.Istio {
		err = decodeIstio(data, env, obj, info)
	} else {
		err = decodeK8s(data, obj, info)
	}
	if err != nil {
		return fail(&key, errLine(root, err), "%v", err)
	}
	return Decoded{Object: obj, Key: &key, Hash: hashOf(data)}, true
}

func checkNames(info model.KindInfo, m metav1.ObjectMeta) string {
	if m.Name == "" {
		return "metadata.name is missing; every object needs a name"
	}
	if errs := validation.IsDNS1123Subdomain(m.Name); len(errs) > 0 {
		return fmt.Sprintf("metadata.name %q is not a valid name: %s", m.Name, strings.Join(errs, "; "))
	}
	if info.Namespaced && m.Namespace == "" {
		return "metadata.namespace is missing; xdshard needs it to find the tenant (set the namespace the object belongs to)"
	}
	if !info.Namespaced && m.Namespace != "" {
		return fmt.Sprintf("metadata.namespace %q is set on a cluster-scoped kind; remove it", m.Namespace)
	}
	if m.Namespace != "" {
		if errs := validation.IsDNS1123Label(m.Namespace); len(errs) > 0 {
			return fmt.Sprintf("metadata.namespace %q is not a valid namespace: %s", m.Namespace, strings.Join(errs, "; "))
		}
	}
	return ""
}

func displayName(m metav1.ObjectMeta) string {
	if m.Name == "" {
		m.Name = "(unnamed)"
	}
	if m.Namespace == "" {
		return m.Name
	}
	return m.Namespace + "/" + m.Name
}

// decodeK8s decodes a Kubernetes kind into its typed object, strictly.
func decodeK8s(data []byte, obj *model.Object, info model.KindInfo) error {
	body := info.New()
	strict, err := k8sjson.UnmarshalStrict(data, body)
	if err != nil {
		return fmt.Errorf("%s", cleanJSONErr(err))
	}
	if len(strict) > 0 {
		return fmt.Errorf("%s", cleanJSONErr(errors.Join(strict...)))
	}
	obj.Body = body
	return nil
}

// istioDoc is the envelope of an Istio kind: the spec is decoded apart,
// as the Istio proto, with protojson.
type istioDoc struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   metav1.ObjectMeta `json:"metadata"`
	Spec       json.RawMessage   `json:"spec"`
	Status     json.RawMessage   `json:"status,omitempty"`
}

// istioEnvelope decodes, strictly, the envelope of a document whose
// top-level apiVersion and kind name an Istio kind, so the header need not
// be decoded apart first: nil for any other document, or where anything
// in it is wrong (the header's decoding then says what).
func istioEnvelope(root *yaml.Node, data []byte) *istioDoc {
	apiVersion, kind := topScalar(root, "apiVersion"), topScalar(root, "kind")
	k, err := model.KindFor(apiVersion, kind)
	if err != nil || !model.Kinds[k].Istio {
		return nil
	}
	var d istioDoc
	if strict, err := k8sjson.UnmarshalStrict(data, &d); err != nil || len(strict) > 0 || d.APIVersion != apiVersion || d.Kind != kind {
		return nil
	}
	return &d
}

// topScalar is the value of a top-level key that is a plain string, or "".
func topScalar(root *yaml.Node, key string) string {
	for i := 0; i+1 < len(root.Content); i += 2 {
		if k, v := root.Content[i], root.Content[i+1]; k.Value == key && v.Kind == yaml.ScalarNode && v.ShortTag() == "!!str" {
			return v.Value
		}
	}
	return ""
}

// decodeIstio decodes an Istio kind's spec as its proto; d is its
// envelope, when istioEnvelope decoded it already.
func decodeIstio(data []byte, d *istioDoc, obj *model.Object, info model.KindInfo) error {
	if d == nil {
		d = &istioDoc{}
		strict, err := k8sjson.UnmarshalStrict(data, d)
		if err != nil {
			return fmt.Errorf("%s", cleanJSONErr(err))
		}
		if len(strict) > 0 {
			return fmt.Errorf("%s", cleanJSONErr(errors.Join(strict...)))
		}
	}
	spec := info.New().(proto.Message)
	if len(d.Spec) > 0 && string(d.Spec) != "null" {
		if err := (protojson.UnmarshalOptions{}).Unmarshal(d.Spec, spec); err != nil {
			return fmt.Errorf("spec: %s", cleanProtoErr(err))
		}
	}
	obj.Body = spec
	return nil
}

var protoPosRE = regexp.MustCompile(`\(line \d+:\d+\): `)

func cleanProtoErr(err error) string {
	// protobuf-go varies its error text on purpose (a non-breaking space
	// after "proto:") so callers cannot depend on it: normalise first.
	s := strings.ReplaceAll(err.Error(), "\u00a0", " ")
	s = strings.ReplaceAll(s, "proto: ", "")
	s = protoPosRE.ReplaceAllString(s, "") // positions in the JSON we made are meaningless to the user
	if strings.Contains(s, "unknown field") {
		s += "; check the field's spelling against the kind's API reference"
	}
	return s
}

func cleanJSONErr(err error) string {
	s := strings.TrimPrefix(err.Error(), "json: ")
	s = strings.ReplaceAll(s, "error unmarshaling JSON: while decoding JSON: json: ", "")
	if strings.Contains(s, "unknown field") {
		s += "; check the field's spelling against the kind's API reference"
	}
	return s
}

var fieldRE = []*regexp.Regexp{
	regexp.MustCompile(`unknown field "([^"]+)"`),
	regexp.MustCompile(`Go struct field [A-Za-z0-9_]+\.([A-Za-z0-9_.]+) of type`),
	regexp.MustCompile(`duplicate field "([^"]+)"`),
	regexp.MustCompile(`field "?([A-Za-z0-9_.]+)"?`),
}

// errLine finds the line of the field an error names, falling back to the
// document's first line.
func errLine(root *yaml.Node, err error) int {
	msg := err.Error()
	for _, re := range fieldRE {
		if m := re.FindStringSubmatch(msg); m != nil {
			if line := lineOfPath(root, m[1]); line > 0 {
				return line
			}
		}
	}
	return root.Line
}

func nodeKind(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "list"
	case yaml.ScalarNode:
		return "scalar"
	case yaml.AliasNode:
		return "alias"
	}
	return "non-mapping"
}

func ptr[T any](v T) *T { return &v }
