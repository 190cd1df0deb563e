package manifest

import (
	"bytes"

	"github.com/cespare/xxhash/v2"
)

// A file is split into its documents before decoding, so an edit decodes
// only the documents whose bytes (or first line) changed: the others are
// taken from the file's last read. The split is by text, on the document
// markers YAML itself obeys at column 0 (even inside a block scalar), so
// it yields the documents the YAML decoder would; a file it cannot split
// with certainty (directives, "---" followed by content, "..." markers) is
// decoded whole.

// chunk is one document of a file: its bytes, and the line it starts on.
type chunk struct {
	line int // 1-based line of the chunk's first byte
	body []byte
}

// docKey identifies a document's decoding by its bytes.
type docKey struct {
	hash uint64
}

// docCache is a file's documents as last decoded, and the line each
// started on.
type docCache map[docKey]cachedDoc

type cachedDoc struct {
	line    int
	decoded []Decoded
}

// moved returns a cached decoding for a document that now starts on line:
// the same when it did not move; its objects with their origins moved
// when it did (a document above it grew or shrank); nil when it holds a
// diagnostic (whose text may name lines), to be decoded again.
func (c cachedDoc) moved(line int) []Decoded {
	if c.line == line {
		return c.decoded
	}
	out := make([]Decoded, len(c.decoded))
	for i, d := range c.decoded {
		if d.Diag != nil || d.Object == nil {
			return nil
		}
		o := *d.Object
		o.Origin.Line += line - c.line
		d.Object = &o
		out[i] = d
	}
	return out
}

// splitDocs splits data at its "---" lines. ok is false when the file
// holds anything that makes a text split uncertain.
func splitDocs(data []byte) (chunks []chunk, ok bool) {
	start, startLine, line := 0, 1, 1
	for i := 0; i < len(data); {
		end := bytes.IndexByte(data[i:], '\n')
		next := len(data)
		if end >= 0 {
			next = i + end + 1
		}
		l := bytes.TrimRight(data[i:next], "\r\n")
		switch {
		case len(l) > 0 && l[0] == '%':
			return nil, false // a directive
		case bytes.HasPrefix(l, []byte("...")) && (len(l) == 3 || l[3] == ' ' || l[3] == '\t'):
			return nil, false // a document end marker
		case bytes.HasPrefix(l, []byte("---")) && (len(l) == 3 || l[3] == ' ' || l[3] == '\t'):
			if rest := bytes.TrimSpace(l[3:]); len(rest) > 0 && rest[0] != '#' {
				return nil, false // content on the marker's line
			}
			chunks = append(chunks, chunk{line: startLine, body: data[start:i]})
			start, startLine = next, line+1
		}
		i = next
		line++
	}
	return append(chunks, chunk{line: startLine, body: data[start:]}), true
}

// decodeChunk decodes one document as if it stood at its line of the file.
func decodeChunk(file string, c chunk, limits Limits) []Decoded {
	return decodeStream(file, c.body, limits, "this document is skipped; the file's other documents are read", c.line-1)
}

// decodeDocs decodes data, reusing cached decodings of documents that did
// not change; it returns the decodings and the cache for the next read.
// A document that only moved keeps its decoding, its origins moved (a
// moved object is a new value, so the model sees its new origin).
func decodeDocs(file string, data []byte, limits Limits, cache docCache) ([]Decoded, docCache) {
	chunks, ok := splitDocs(data)
	if !ok {
		return DecodeWith(file, data, limits), nil
	}
	next := make(docCache, len(chunks))
	var out []Decoded
	for _, c := range chunks {
		k := docKey{xxhash.Sum64(c.body)}
		var ds []Decoded
		if prev, hit := cache[k]; hit {
			ds = prev.moved(c.line)
		}
		if ds == nil {
			ds = decodeChunk(file, c, limits)
		}
		next[k] = cachedDoc{c.line, ds}
		out = append(out, ds...)
	}
	return out, next
}
