package manifest

import (
	"bytes"
	"context"
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
// and so is a file whose documents with aliases add up to more than
// limits.FileExpandedBytes expanded (nothing of it is read then); both are
// found before anything is expanded.
func DecodeWith(file string, data []byte, limits Limits) []Decoded {
	fd := newFileDecoder(context.Background(), file, limits)
	out, err := fd.decode([]stream{{data: data, skipped: "the rest of this file is skipped"}})
	if err != nil {
		return []Decoded{{Diag: ptr(model.Problem(model.Origin{File: file}, nil, err.Error()+"; nothing in it is read"))}}
	}
	return out
}

// A file's documents are decoded in two passes, so that what its aliases
// cost is known for the whole file before anything is expanded. The first
// pass parses each document, decodes those without aliases (they expand
// nothing) and measures those with (expandedSize); if these add up to more
// than Limits.FileExpandedBytes, the file is refused whole. Otherwise the
// second pass parses them again and decodes them. Only a document with
// aliases is parsed twice, and one document's nodes are held at a time.
//
// Without it, each document was bounded alone (Limits.DocumentBytes): an
// 8 MB file of 1,594 documents, each a 2.2 KB scalar and 900 aliases to
// it, just under 2 MiB expanded, cost 42 CPU seconds per write.

// tooExpandedError refuses a file whose documents with aliases add up to
// more than its bound once expanded.
type tooExpandedError struct {
	size  int64 // what was measured when counting stopped: more than limit
	limit int64
}

func (e *tooExpandedError) Error() string {
	return fmt.Sprintf("expands to at least %d bytes once its YAML aliases are expanded, more than the %d a file may (4 x --max-file-bytes); write the values out instead of aliasing them, or split the file", e.size, e.limit)
}

// fileDecoder decodes the documents of one file under its bound.
type fileDecoder struct {
	ctx    context.Context // decoding stops between documents when it ends
	file   string
	limits Limits
	// expanded is what the file's documents with aliases measured so far
	// expand to.
	expanded int64
}

func newFileDecoder(ctx context.Context, file string, limits Limits) *fileDecoder {
	return &fileDecoder{ctx: ctx, file: file, limits: limits.withDefaults()}
}

// stream is a run of documents decoded together: a whole file, or one
// document split out of it by text (docs.go).
type stream struct {
	data    []byte
	offset  int    // the line data starts after in its file: every line reported is shifted by it
	skipped string // what an invalid document costs: the rest of the file, or only itself
	line    int    // the line of the file it starts on (docs.go)
	key     docKey // its bytes' hash (docs.go)

	done     bool       // out is its decoding (taken from the cache)
	out      []Decoded  // its documents' decodings, in order
	later    []laterDoc // the documents left for the second pass, in order
	expanded int64      // what its documents with aliases expand to
}

// laterDoc is a document with aliases: the index of the document in its
// stream, and the place of its decoding in the stream's out.
type laterDoc struct{ doc, at int }

// decode decodes streams, the documents of one file in order, in two
// passes; it fails with a *tooExpandedError when the file's documents with
// aliases expand past its bound (streams already decoded, from the cache,
// counted), and with the context's error when it ends.
func (fd *fileDecoder) decode(streams []stream) ([]Decoded, error) {
	if err := fd.over(); err != nil {
		return nil, err
	}
	for i := range streams {
		if !streams[i].done {
			if err := fd.first(&streams[i]); err != nil {
				return nil, err
			}
		}
	}
	n := 0
	for i := range streams {
		if len(streams[i].later) > 0 {
			if err := fd.second(&streams[i]); err != nil {
				return nil, err
			}
		}
		n += len(streams[i].out)
	}
	if len(streams) == 1 {
		return streams[0].out, nil
	}
	out := make([]Decoded, 0, n)
	for i := range streams {
		out = append(out, streams[i].out...)
	}
	return out, nil
}

func (fd *fileDecoder) over() error {
	if fd.expanded > fd.limits.FileExpandedBytes {
		return &tooExpandedError{size: fd.expanded, limit: fd.limits.FileExpandedBytes}
	}
	return nil
}

// first is the first pass over s.
func (fd *fileDecoder) first(s *stream) error {
	s.out, s.later, s.expanded = nil, nil, 0
	defer func() {
		if r := recover(); r != nil {
			s.out = append(s.out, fd.internalError(r))
		}
	}()
	return fd.each(s, true, func(i int, root *yaml.Node) error {
		size, aliases := measure(root, fd.limits.DocumentBytes)
		if !aliases || size > fd.limits.DocumentBytes {
			// Nothing to expand, or refused alone before expanding.
			s.out = append(s.out, fd.decodeDoc(root, size))
			return nil
		}
		s.expanded += size
		fd.expanded += size
		s.later = append(s.later, laterDoc{doc: i, at: len(s.out)})
		s.out = append(s.out, Decoded{})
		return fd.over()
	})
}

// second decodes the documents of s the first pass left.
func (fd *fileDecoder) second(s *stream) error {
	next := 0 // s.later[next] is the next document to decode
	defer func() {
		// The first pass parsed the same bytes: a panic here is in decoding.
		if r := recover(); r != nil {
			for _, l := range s.later[next:] {
				s.out[l.at] = fd.internalError(r)
			}
		}
		s.later = nil
	}()
	err := fd.each(s, false, func(i int, root *yaml.Node) error {
		if i != s.later[next].doc {
			return nil
		}
		size, _ := measure(root, fd.limits.DocumentBytes)
		s.out[s.later[next].at] = fd.decodeDoc(root, size)
		if next++; next == len(s.later) {
			return errStop
		}
		return nil
	})
	if errors.Is(err, errStop) {
		err = nil
	}
	return err
}

var errStop = errors.New("stop")

func (fd *fileDecoder) internalError(r any) Decoded {
	return Decoded{Diag: ptr(model.Problem(model.Origin{File: fd.file}, nil, fmt.Sprintf("could not decode (internal error: %v); please report this file", r)))}
}

// each parses the documents of s one at a time and calls f with the root
// of each that is not empty, and its index in s. A YAML error ends s,
// with its diagnostic when report is set (the first pass). It stops early with f's
// error, or the context's.
func (fd *fileDecoder) each(s *stream, report bool, f func(i int, root *yaml.Node) error) error {
	dec := yaml.NewDecoder(bytes.NewReader(s.data))
	for i := 0; ; i++ {
		if err := fd.ctx.Err(); err != nil {
			return err
		}
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			if report {
				s.out = append(s.out, fd.invalid(s, err))
			}
			return nil
		}
		if s.offset > 0 {
			shiftLines(&doc, s.offset)
		}
		root := &doc
		if root.Kind == yaml.DocumentNode {
			if len(root.Content) == 0 {
				continue
			}
			root = root.Content[0]
		}
		if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
			continue // an empty document between separators
		}
		if err := f(i, root); err != nil {
			return err
		}
	}
}

// invalid is the diagnostic of a YAML error in s.
func (fd *fileDecoder) invalid(s *stream, err error) Decoded {
	msg := err.Error()
	if s.offset > 0 {
		msg = yamlLineRE.ReplaceAllStringFunc(msg, func(m string) string {
			n, _ := strconv.Atoi(m[len("line "):])
			return "line " + strconv.Itoa(n+s.offset)
		})
	}
	return Decoded{Diag: ptr(model.Problem(model.Origin{File: fd.file, Line: yamlErrLine(err) + s.offset}, nil, "invalid YAML: "+msg+"; "+s.skipped))}
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

// decodeDoc decodes the document whose root is root; size is what it
// expands to (measure).
func (fd *fileDecoder) decodeDoc(root *yaml.Node, size int64) Decoded {
	file, limits := fd.file, fd.limits
	origin := model.Origin{File: file, Line: root.Line}
	fail := func(key *model.Key, line int, format string, args ...any) Decoded {
		d := model.Problem(model.Origin{File: file, Line: line}, key, fmt.Sprintf(format, args...))
		return Decoded{Diag: &d, Key: key}
	}
	if root.Kind != yaml.MappingNode {
		return fail(nil, root.Line, "document is a %s, want a Kubernetes object (a mapping with apiVersion, kind, metadata)", nodeKind(root))
	}
	if n := size; n > limits.DocumentBytes {
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
	return Decoded{Object: obj, Key: &key, Hash: hashOf(data)}
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
