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

// expandedSize estimates the bytes of n with every alias expanded, as
// decoding would build it, counting each node's value and a small cost per
// node. It stops counting past limit (returning more than limit), and
// measures each aliased subtree once, so a document of nested aliases
// ("billion laughs") costs the walk only its own size.
func expandedSize(n *yaml.Node, limit int64) int64 {
	size, _ := measure(n, limit)
	return size
}

// measure is expandedSize, and says whether n holds an alias: only then
// does decoding it expand anything.
func measure(n *yaml.Node, limit int64) (int64, bool) {
	aliases := false
	memo := map[*yaml.Node]int64{}
	var size func(n *yaml.Node, depth int) int64
	size = func(n *yaml.Node, depth int) int64 {
		if n == nil {
			return 0
		}
		if depth > 512 {
			return limit + 1 // deeper than any manifest: refuse it
		}
		if s, ok := memo[n]; ok {
			return s
		}
		memo[n] = limit + 1 // an alias cycle counts as too large
		total := int64(len(n.Value)) + 8
		if n.Kind == yaml.AliasNode {
			aliases = true
			total = size(n.Alias, depth+1)
		}
		for _, c := range n.Content {
			total += size(c, depth+1)
			if total > limit {
				total = limit + 1
				break
			}
		}
		memo[n] = total
		return total
	}
	return size(n, 0), aliases
}
