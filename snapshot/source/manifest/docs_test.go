package manifest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// TestDocsDecodeLikeTheWholeFile is a property test: over random edits of
// a multi-document file (values changed, documents added, removed and
// grown, comments and blank lines moved), decoding it document by document
// with the last read's cache gives exactly what decoding the whole file
// gives: the same objects (content hash, key, origin line) and the same
// diagnostics.
func TestDocsDecodeLikeTheWholeFile(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 5))
	type doc struct {
		name, port string
		pad        int
		bad        bool
	}
	render := func(docs []doc, lead string) []byte {
		var b strings.Builder
		b.WriteString(lead)
		for i, d := range docs {
			if i > 0 {
				b.WriteString([]string{"---\n", "--- # next\n", "---\n\n"}[rng.IntN(3)])
			}
			if d.bad {
				fmt.Fprintf(&b, "apiVersion: v1\nkind: Service\nmetadata: {name: %s, namespace: shop}\nspec: {ports: [{port: notaport}]}\n", d.name)
				continue
			}
			fmt.Fprintf(&b, "apiVersion: v1\nkind: Service\nmetadata:\n  name: %s\n  namespace: shop\n%sspec:\n  ports:\n  - port: %s\n", d.name, strings.Repeat("  # pad\n", d.pad), d.port)
		}
		return []byte(b.String())
	}
	var docs []doc
	for i := 0; i < 8; i++ {
		docs = append(docs, doc{name: fmt.Sprint("svc-", i), port: fmt.Sprint(80 + i)})
	}
	var cache docCache
	for round := 0; round < 300; round++ {
		switch rng.IntN(5) {
		case 0:
			docs[rng.IntN(len(docs))].port = fmt.Sprint(1000 + rng.IntN(9000))
		case 1:
			docs = slices.Insert(docs, rng.IntN(len(docs)+1), doc{name: fmt.Sprint("new-", round), port: "8080"})
		case 2:
			if len(docs) > 1 {
				i := rng.IntN(len(docs))
				docs = slices.Delete(docs, i, i+1)
			}
		case 3:
			docs[rng.IntN(len(docs))].pad = rng.IntN(4)
		case 4:
			i := rng.IntN(len(docs))
			docs[i].bad = !docs[i].bad
		}
		data := render(docs, []string{"", "# a header\n", "\n\n"}[rng.IntN(3)])
		var got []Decoded
		var err error
		got, cache, err = decodeDocs(context.Background(), "f.yaml", data, Limits{}, cache)
		if err != nil {
			t.Fatal(err)
		}
		want := DecodeWith("f.yaml", data, Limits{})
		if a, b := summary(got), summary(want); !slices.Equal(a, b) {
			t.Fatalf("round %d: by documents\n%s\nwhole file\n%s\nfile:\n%s", round, strings.Join(a, "\n"), strings.Join(b, "\n"), data)
		}
	}
}

func summary(ds []Decoded) []string {
	var out []string
	for _, d := range ds {
		switch {
		case d.Object != nil:
			out = append(out, fmt.Sprintf("object %s %s at %s", d.Object.Key, d.Hash, d.Object.Origin))
		case d.Diag != nil:
			out = append(out, "diag "+d.Diag.String())
		}
	}
	return out
}

func TestSplitDocsRefusesWhatItCannotSplitSurely(t *testing.T) {
	for _, data := range []string{"%YAML 1.2\n---\na: 1\n", "--- !!map\na: 1\n", "a: 1\n...\n---\nb: 2\n", "--- {a: 1}\n"} {
		if _, ok := splitDocs([]byte(data)); ok {
			t.Errorf("splitDocs(%q) split it", data)
		}
	}
	chunks, ok := splitDocs([]byte("a: 1\n---\nb: |\n  x\n--- # c\nc: 3"))
	if !ok || len(chunks) != 3 || chunks[1].line != 3 || chunks[2].line != 6 {
		t.Fatalf("got %+v, %v", chunks, ok)
	}
}
