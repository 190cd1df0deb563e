package manifest

import (
	"fmt"
	"strings"

	"github.com/cespare/xxhash/v2"
	"go.yaml.in/yaml/v3"
)

// lineOf returns the line of a top-level key, or the mapping's own line.
func lineOf(root *yaml.Node, key string) int {
	if root.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(root.Content); i += 2 {
			if root.Content[i].Value == key {
				return root.Content[i].Line
			}
		}
	}
	return root.Line
}

// lineOfPath finds a dotted field path (spec.ports.port) in the YAML tree,
// matching a path by its last elements so "port" alone also finds a field.
// Sequences are searched element by element; the first match wins. It
// returns 0 when nothing matches.
func lineOfPath(root *yaml.Node, path string) int {
	parts := strings.Split(path, ".")
	for start := 0; start < len(parts); start++ {
		if line := findPath(root, parts[start:], 0); line > 0 {
			return line
		}
	}
	return 0
}

// findPath searches depth-first for a key sequence starting anywhere below n.
func findPath(n *yaml.Node, parts []string, depth int) int {
	if depth > 64 || n == nil {
		return 0
	}
	if line := matchHere(n, parts); line > 0 {
		return line
	}
	for _, c := range n.Content {
		if line := findPath(c, parts, depth+1); line > 0 {
			return line
		}
	}
	return 0
}

func matchHere(n *yaml.Node, parts []string) int {
	if len(parts) == 0 {
		return 0
	}
	switch n.Kind {
	case yaml.SequenceNode:
		for _, c := range n.Content {
			if line := matchHere(c, parts); line > 0 {
				return line
			}
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			if !strings.EqualFold(n.Content[i].Value, parts[0]) {
				continue
			}
			if len(parts) == 1 {
				return n.Content[i].Line
			}
			if line := matchHere(n.Content[i+1], parts[1:]); line > 0 {
				return line
			}
		}
	}
	return 0
}

// jsonable turns what yaml.v3 decodes into values encoding/json accepts:
// mappings with non-string keys become string-keyed.
func jsonable(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, e := range t {
			t[k] = jsonable(e)
		}
		return t
	case map[any]any:
		m := make(map[string]any, len(t))
		for k, e := range t {
			m[fmt.Sprint(k)] = jsonable(e)
		}
		return m
	case []any:
		for i, e := range t {
			t[i] = jsonable(e)
		}
		return t
	}
	return v
}

func hashOf(b []byte) string { return fmt.Sprintf("%016x", xxhash.Sum64(b)) }
