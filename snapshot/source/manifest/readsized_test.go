package manifest

import (
	"bytes"
	"io/fs"
	"testing"
	"testing/fstest"
	"time"
)

// growing is a file whose Stat says less than it holds, as one being
// written while it is read.
type growing struct {
	fs.File
	said int64
}

func (g growing) Stat() (fs.FileInfo, error) {
	st, err := g.File.Stat()
	return sizeInfo{st, g.said}, err
}

type sizeInfo struct {
	fs.FileInfo
	size int64
}

func (s sizeInfo) Size() int64 { return s.size }

// TestReadSized reads files whole up to the limit: of the size Stat gives,
// larger than Stat says (grown meanwhile), and larger than the limit.
func TestReadSized(t *testing.T) {
	data := bytes.Repeat([]byte("abcdefgh"), 5000) // 40,000 bytes
	fsys := fstest.MapFS{"f.yaml": {Data: data, ModTime: time.Now()}}
	for _, c := range []struct {
		name  string
		said  int64 // 0: what Stat says
		limit int64
		want  int
	}{
		{"whole", 0, 1 << 20, len(data)},
		{"grew since its stat", 100, 1 << 20, len(data)},
		{"said nothing", -1, 1 << 20, len(data)},
		{"past the limit", 0, 1000, 1000},
	} {
		f, err := fsys.Open("f.yaml")
		if err != nil {
			t.Fatal(err)
		}
		var file fs.File = f
		if c.said != 0 {
			file = growing{f, max(c.said, 0)}
		}
		got, err := readSized(file, c.limit)
		f.Close()
		if err != nil || len(got) != c.want || !bytes.Equal(got, data[:c.want]) {
			t.Fatalf("%s: read %d bytes (%v), want the first %d", c.name, len(got), err, c.want)
		}
	}
}
