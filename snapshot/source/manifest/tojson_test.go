package manifest

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"go.yaml.in/yaml/v3"
)

// FuzzNodeJSON checks nodeJSON against the general way (yaml.v3's
// decoding, then encoding/json): whatever document it takes, it writes
// exactly the bytes the general way writes, and it never takes one the
// general way refuses.
func FuzzNodeJSON(f *testing.F) {
	seeds, _ := filepath.Glob("../demo/mesh/*.yaml")
	for _, p := range seeds {
		if b, err := os.ReadFile(p); err == nil {
			for _, doc := range bytes.Split(b, []byte("\n---\n")) {
				f.Add(doc)
			}
		}
	}
	f.Add([]byte(vsDoc))
	for _, s := range []string{
		"a: 1\nb: 0x1F\nc: 1_000\nd: 1e3\ne: .5\nf: -0\ng: +1\nh: 0o17\ni: 017\nj: 1e400\nk: -.inf\nl: .nan\n",
		"a: yes\nb: no\nc: on\nd: true\ne: FALSE\nf: ~\ng: null\nh:\ni: 2001-12-14t21:59:43.10-05:00\nj: 2002-12-14\n",
		"a: \"<b>&amp;\\u2028\\u2029\\x01\\t\\n\\\"\\\\\"\nb: 'é 日本'\nc: |\n  line\n  two\n",
		"a: !!str 12\nb: !!int \"12\"\nc: !custom x\n\"1\": quoted key\n2: int key\n",
		"a: &x {b: 1}\nc: *x\nd:\n  <<: *x\n  e: 2\n",
		"a: 1\na: 2\n",
		"a: [1, [2, {b: [3]}], {}]\nb: []\nc: {}\n",
		"? [complex]\n: key\n",
		"a: 18446744073709551616\nb: 9223372036854775807\nc: -9223372036854775809\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var doc yaml.Node
		if err := yaml.Unmarshal(data, &doc); err != nil || doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
			return
		}
		root := doc.Content[0]
		if expandedSize(root, 1<<20) > 1<<20 {
			return
		}
		fast, ok := nodeJSON(nil, root, 0)
		if !ok {
			return
		}
		var generic any
		if err := root.Decode(&generic); err != nil {
			t.Fatalf("nodeJSON took a document yaml.v3 refuses (%v): %q", err, data)
		}
		slow, err := json.Marshal(jsonable(generic))
		if err != nil {
			t.Fatalf("nodeJSON took a document encoding/json refuses (%v): %q", err, data)
		}
		if !bytes.Equal(fast, slow) {
			t.Fatalf("nodeJSON wrote\n%s\nthe general way\n%s\nfor %q", fast, slow, data)
		}
	})
}

// TestNodeJSONTakesPlainManifests: the demo mesh's documents and the
// bench's VirtualService take the direct way, so FuzzNodeJSON's
// comparison is made on real manifests and the general way is the
// exception.
func TestNodeJSONTakesPlainManifests(t *testing.T) {
	files, _ := filepath.Glob("../demo/mesh/*.yaml")
	docs := [][]byte{[]byte(vsDoc)}
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, bytes.Split(b, []byte("\n---\n"))...)
	}
	taken := 0
	for _, d := range docs {
		var doc yaml.Node
		if err := yaml.Unmarshal(d, &doc); err != nil || len(doc.Content) == 0 {
			continue
		}
		if _, ok := nodeJSON(nil, doc.Content[0], 0); !ok {
			t.Errorf("a plain manifest took the general way:\n%s", d)
		}
		taken++
	}
	if taken < 10 {
		t.Fatalf("only %d documents checked", taken)
	}
}
