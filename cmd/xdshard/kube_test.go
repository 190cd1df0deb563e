package main

import (
	"context"
	"errors"
	"os"
	"regexp"
	"testing"

	"github.com/xdshard/xdshard/internal/kubetest"
)

// TestAnalyzeReadsALiveCluster: analyze --kubeconfig reads the cluster's
// NetworkPolicies and Istio authorization, as in files, and reports where
// they disagree (a real API server on loopback).
func TestAnalyzeReadsALiveCluster(t *testing.T) {
	bin := kubetest.Binaries(t)
	ctx := context.Background()
	c, err := kubetest.Start(ctx, bin, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	mesh, err := os.ReadFile("../../snapshot/translate/policy/testdata/analyze-in/mesh.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// The cluster allocates Service IPs from its own range.
	manifests := regexp.MustCompile(`clusterIP: [0-9.]+,\s*`).ReplaceAllString(string(mesh), "")
	if err := c.Apply(ctx, manifests); err != nil {
		t.Fatal(err)
	}
	files := run([]string{"analyze", "--config", "../../snapshot/translate/policy/testdata/analyze-in"})
	live := run([]string{"analyze", "--kubeconfig", c.Kubeconfig})
	var fe, le *exitError
	if !errors.As(files, &fe) || !errors.As(live, &le) || le.code != exitFindings || le.msg != fe.msg {
		t.Fatalf("analyze of the live cluster: %v; of the same files: %v; want the same findings", live, files)
	}
}
