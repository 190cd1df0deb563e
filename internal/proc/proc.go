// Package proc is what the tests that run programs as processes share:
// a concurrency-safe log of a process's output, and xdshard's binary
// built once per test binary. Only tests import it.
package proc

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Log keeps a process's output (the last 4 MiB at least) for a failure
// message; exec writes to it from goroutines of its own.
type Log struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *Log) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.buf.Len() > 4<<20 {
		l.buf.Reset()
	}
	return l.buf.Write(p)
}

// String is everything kept.
func (l *Log) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// Tail is the last n lines kept.
func (l *Log) Tail(n int) string {
	lines := strings.Split(strings.TrimRight(l.String(), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

var (
	binOnce sync.Once
	binDir  string
	binPath string
	binErr  error
)

// XDShard builds cmd/xdshard (cmdDir, relative to the test's package)
// into a temporary folder once per test binary and returns its path;
// RemoveXDShard, from TestMain, removes it.
func XDShard(tb testing.TB, cmdDir string) string {
	tb.Helper()
	binOnce.Do(func() {
		if binDir, binErr = os.MkdirTemp("", "xdshard-bin"); binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "xdshard")
		if out, err := exec.Command("go", "build", "-o", binPath, cmdDir).CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build %s: %v\n%s", cmdDir, err, out)
		}
	})
	if binErr != nil {
		tb.Fatal(binErr)
	}
	return binPath
}

// RemoveXDShard removes the binary XDShard built, if any.
func RemoveXDShard() {
	if binDir != "" {
		os.RemoveAll(binDir)
	}
}
