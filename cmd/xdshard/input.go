package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/pflag"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/xdshard/xdshard/snapshot"
	"github.com/xdshard/xdshard/snapshot/model"
	"github.com/xdshard/xdshard/snapshot/source/demo"
	"github.com/xdshard/xdshard/snapshot/source/kube"
	"github.com/xdshard/xdshard/snapshot/source/manifest"
)

// input is the mesh a one-shot command (check, render, analyze) reads: a
// config directory, a live cluster, or the embedded demo.
type input struct {
	config, kubeconfig, context string
	maxFileBytes                int64
	selectors                   []string
}

func inputFlags(fs *pflag.FlagSet) *input {
	in := &input{}
	fs.StringVar(&in.config, "config", "", "directory of YAML manifests (default: the embedded demo mesh)")
	fs.StringVar(&in.kubeconfig, "kubeconfig", "", "read the live cluster of this kubeconfig file instead")
	fs.StringVar(&in.context, "context", "", "the kubeconfig context to use (default: its current context)")
	fs.Int64Var(&in.maxFileBytes, "max-file-bytes", 8<<20, "largest manifest file read, as serve's flag of the same name")
	fs.StringArrayVar(&in.selectors, "discovery-selectors", nil, "with --kubeconfig: the namespaces that are the mesh, as serve's flag of the same name")
	return in
}

// load reads the input once, as serve's source first reads it.
func (in *input) load() (*model.Mesh, *manifest.Result, error) {
	switch {
	case in.config != "" && in.kubeconfig != "":
		return nil, nil, fmt.Errorf("--config and --kubeconfig both given: pick one")
	case len(in.selectors) > 0 && in.kubeconfig == "":
		return nil, nil, fmt.Errorf("--discovery-selectors picks namespaces read from Kubernetes; files and the demo are read whole: drop it, or pass --kubeconfig")
	case in.kubeconfig != "":
		sels, err := kube.ParseDiscoverySelectors(in.selectors)
		if err != nil {
			return nil, nil, err
		}
		return loadKube(in.kubeconfig, in.context, sels)
	case in.config != "":
		res, err := manifest.LoadWith(in.config, manifest.Limits{FileBytes: in.maxFileBytes})
		if err != nil {
			return nil, nil, err
		}
		return res.Mesh(), res, nil
	}
	res, err := manifest.LoadFS(demo.FS())
	if err != nil {
		return nil, nil, err
	}
	return res.Mesh(), res, nil
}

// loadKube reads a cluster's mesh: the Kubernetes source's first full
// state.
func loadKube(kubeconfig, kctx string, selectors []*metav1.LabelSelector) (*model.Mesh, *manifest.Result, error) {
	src, err := kube.New(kube.Config{Kubeconfig: kubeconfig, Context: kctx, DiscoverySelectors: selectors})
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var first model.Event
	got := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		errc <- src.Run(ctx, func(ev model.Event) {
			if ev.Synced {
				first = ev
				close(got)
			}
		})
	}()
	select {
	case <-got:
	case err := <-errc:
		if err == nil {
			err = ctx.Err()
		}
		return nil, nil, fmt.Errorf("reading %s: %w", kubeconfig, err)
	case <-ctx.Done():
		return nil, nil, fmt.Errorf("reading %s: the informers did not sync within 2 minutes", kubeconfig)
	}
	cancel()
	<-errc
	res := &manifest.Result{Diagnostics: map[string][]snapshot.Diagnostic{}}
	for _, c := range first.Changes {
		if c.Object != nil {
			res.Objects = append(res.Objects, c.Object)
		}
	}
	for k, d := range first.Diagnostics {
		if len(d) > 0 {
			res.Diagnostics[k] = d
		}
	}
	return res.Mesh(), res, nil
}
