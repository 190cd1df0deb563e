// Package helmtest runs the real helm, and finds the other programs
// scripts/istio-bins.sh builds beside it (istiod, istio-agent, istioctl),
// for tests. XDSHARD_ISTIO_BIN names their folder (scripts/test.sh sets
// it). Only tests import it.
package helmtest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// Programs returns the folder of the named programs, or skips the test
// when XDSHARD_ISTIO_BIN is not set; under CI=true its absence fails, so
// a broken install never turns into silently skipped tests.
func Programs(tb testing.TB, names ...string) string {
	tb.Helper()
	dir := os.Getenv("XDSHARD_ISTIO_BIN")
	if dir == "" {
		if os.Getenv("CI") == "true" {
			tb.Fatal("XDSHARD_ISTIO_BIN is not set under CI: scripts/test.sh builds istiod, istio-agent, istioctl and helm and sets it")
		}
		tb.Skip("no helm or istiod: run scripts/test.sh, or set XDSHARD_ISTIO_BIN=$(scripts/istio-bins.sh)")
	}
	for _, n := range names {
		if _, err := os.Stat(filepath.Join(dir, n)); err != nil {
			tb.Fatalf("XDSHARD_ISTIO_BIN=%s: %v", dir, err)
		}
	}
	return dir
}

// Run runs helm with args, its caches and config in a temporary folder,
// and returns its standard output, or an error with its standard error.
func Run(tb testing.TB, args ...string) (string, error) {
	tb.Helper()
	home := tb.TempDir()
	cmd := exec.Command(filepath.Join(Programs(tb, "helm"), "helm"), args...)
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+home+"/cache", "HELM_CONFIG_HOME="+home+"/config", "HELM_DATA_HOME="+home+"/data")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("helm %q: %v: %s", args, err, stderr.String())
	}
	return stdout.String(), nil
}

// Template renders chart as release in namespace (helm template, with
// args such as --set or --values); a failure fails tb with helm's message.
func Template(tb testing.TB, release, chart, namespace string, args ...string) string {
	tb.Helper()
	out, err := Run(tb, append([]string{"template", release, chart, "--namespace", namespace}, args...)...)
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// Objects decodes a rendering into its objects.
func Objects(tb testing.TB, rendered string) []*unstructured.Unstructured {
	tb.Helper()
	var objs []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader([]byte(rendered)), 4096)
	for {
		var m map[string]any
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			tb.Fatalf("a rendered object: %v", err)
		}
		if m != nil {
			objs = append(objs, &unstructured.Unstructured{Object: m})
		}
	}
	return objs
}
