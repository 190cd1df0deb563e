package manifest

import (
	"bytes"
	"context"

	"github.com/cespare/xxhash/v2"

	"github.com/xdshard/xdshard/snapshot/model"
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
	line     int
	decoded  []Decoded
	expanded int64 // what its documents with aliases expand to (decode.go)
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
	fd := newFileDecoder(context.Background(), file, limits)
	out, err := fd.decode([]stream{chunkStream(c)})
	if err != nil {
		return []Decoded{{Diag: ptr(model.Problem(model.Origin{File: file, Line: c.line}, nil, err.Error()))}}
	}
	return out
}

func chunkStream(c chunk) stream {
	return stream{data: c.body, offset: c.line - 1, line: c.line, key: docKey{xxhash.Sum64(c.body)},
		skipped: "this document is skipped; the file's other documents are read"}
}

// decodeDocs decodes data, reusing cached decodings of documents that did
// not change; it returns the decodings and the cache for the next read.
// A document that only moved keeps its decoding, its origins moved (a
// moved object is a new value, so the model sees its new origin). It
// fails as fileDecoder.decode does: what the documents taken from the
// cache expand to counts toward the file's bound as if they were decoded
// again, so whether a file is refused depends on its bytes alone.
func decodeDocs(ctx context.Context, file string, data []byte, limits Limits, cache docCache) ([]Decoded, docCache, error) {
	fd := newFileDecoder(ctx, file, limits)
	chunks, ok := splitDocs(data)
	if !ok {
		out, err := fd.decode([]stream{{data: data, skipped: "the rest of this file is skipped"}})
		return out, nil, err
	}
	streams := make([]stream, len(chunks))
	for i, c := range chunks {
		s := &streams[i]
		*s = chunkStream(c)
		if prev, hit := cache[s.key]; hit {
			if ds := prev.moved(c.line); ds != nil {
				s.done, s.out, s.expanded = true, ds, prev.expanded
				fd.expanded += prev.expanded
			}
		}
	}
	out, err := fd.decode(streams)
	if err != nil {
		return nil, nil, err
	}
	next := make(docCache, len(chunks))
	for i := range streams {
		s := &streams[i]
		next[s.key] = cachedDoc{s.line, s.out, s.expanded}
	}
	return out, next, nil
}
