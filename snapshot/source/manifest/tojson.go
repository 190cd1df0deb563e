package manifest

import (
	"encoding/json"
	"slices"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// A document becomes JSON before it is decoded into its kind (strictly,
// and with protojson for Istio specs). The general way there is yaml.v3's
// decoding into Go values, then encoding/json; nodeJSON writes the same
// bytes straight from the parsed nodes for the documents nearly every
// manifest is made of, where that way cost a fifth of decoding one
// (a map and a boxed value per node, then reflection over them).
//
// It takes the plain subset: mappings whose keys are plain strings, none
// repeated and none a merge key ("<<"), sequences, string scalars, and
// other scalars, which yaml.v3 itself decodes, so their meaning (numbers,
// booleans, null, timestamps) is its own. Anything else (an alias, a
// merge, a key of another kind, a tag of its own) reports false and takes
// the general way, which says what is wrong with it. FuzzNodeJSON checks
// both ways give the same bytes for any document the subset takes.

// nodeJSON appends n as JSON to b, or reports false when n is outside the
// plain subset.
func nodeJSON(b []byte, n *yaml.Node, depth int) ([]byte, bool) {
	if depth > 256 {
		return b, false
	}
	switch n.Kind {
	case yaml.MappingNode:
		return mappingJSON(b, n, depth)
	case yaml.SequenceNode:
		b = append(b, '[')
		for i, c := range n.Content {
			if i > 0 {
				b = append(b, ',')
			}
			var ok bool
			if b, ok = nodeJSON(b, c, depth+1); !ok {
				return b, false
			}
		}
		return append(b, ']'), true
	case yaml.ScalarNode:
		return scalarJSON(b, n)
	}
	return b, false
}

func mappingJSON(b []byte, n *yaml.Node, depth int) ([]byte, bool) {
	if len(n.Content)%2 != 0 {
		return b, false
	}
	// encoding/json writes a map's keys sorted.
	type entry struct{ key, value *yaml.Node }
	entries := make([]entry, 0, len(n.Content)/2)
	for i := 0; i < len(n.Content); i += 2 {
		k := n.Content[i]
		if k.Kind != yaml.ScalarNode || k.ShortTag() != "!!str" || k.Tag != "!!str" && k.Tag != "" || k.Value == "<<" {
			return b, false
		}
		entries = append(entries, entry{k, n.Content[i+1]})
	}
	slices.SortFunc(entries, func(a, c entry) int { return strings.Compare(a.key.Value, c.key.Value) })
	b = append(b, '{')
	for i, e := range entries {
		if i > 0 {
			if entries[i-1].key.Value == e.key.Value {
				return b, false // yaml.v3 refuses a repeated key: let it say so
			}
			b = append(b, ',')
		}
		b = appendJSONString(b, e.key.Value)
		b = append(b, ':')
		var ok bool
		if b, ok = nodeJSON(b, e.value, depth+1); !ok {
			return b, false
		}
	}
	return append(b, '}'), true
}

func scalarJSON(b []byte, n *yaml.Node) ([]byte, bool) {
	if n.Tag != "" && n.Tag != n.ShortTag() {
		return b, false // a tag of the document's own
	}
	switch n.ShortTag() {
	case "!!str":
		return appendJSONString(b, n.Value), true
	case "!!int", "!!float", "!!bool", "!!null", "!!timestamp":
		var v any
		if err := n.Decode(&v); err != nil {
			return b, false
		}
		out, err := json.Marshal(jsonable(v))
		if err != nil {
			return b, false
		}
		return append(b, out...), true
	}
	return b, false
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as encoding/json writes a string: quoted,
// with HTML's <, > and & escaped, control characters escaped, invalid
// UTF-8 as U+FFFD, and U+2028 and U+2029 escaped.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
