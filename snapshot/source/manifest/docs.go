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

// docKey identifies a document's decoding: its bytes and where it starts
// (the line numbers in its objects' origins and diagnostics).
type docKey struct {
	hash uint64
	line int
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

// decodeChunk decodes one document as if it stood at its line of the file:
// blank lines before it put its origins on the file's lines.
func decodeChunk(file string, c chunk, limits Limits) []Decoded {
	buf := make([]byte, 0, c.line-1+len(c.body))
	buf = append(buf, bytes.Repeat([]byte{'\n'}, c.line-1)...)
	buf = append(buf, c.body...)
	return decodeStream(file, buf, limits, "this document is skipped; the file's other documents are read")
}

// decodeDocs decodes data, reusing cached decodings of documents that did
// not change; it returns the decodings and the cache for the next read.
func decodeDocs(file string, data []byte, limits Limits, cache map[docKey][]Decoded) ([]Decoded, map[docKey][]Decoded) {
	chunks, ok := splitDocs(data)
	if !ok {
		return DecodeWith(file, data, limits), nil
	}
	next := make(map[docKey][]Decoded, len(chunks))
	var out []Decoded
	for _, c := range chunks {
		k := docKey{xxhash.Sum64(c.body), c.line}
		ds, hit := cache[k]
		if !hit {
			ds = decodeChunk(file, c, limits)
		}
		next[k] = ds
		out = append(out, ds...)
	}
	return out, next
}
