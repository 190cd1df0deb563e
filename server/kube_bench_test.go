package server_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"regexp"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"

	"github.com/xdshard/xdshard/bench/fleet"
	"github.com/xdshard/xdshard/bench/proxy"
	"github.com/xdshard/xdshard/internal/kubetest"
	"github.com/xdshard/xdshard/server"
	"github.com/xdshard/xdshard/snapshot/model"
	"github.com/xdshard/xdshard/snapshot/source/kube"
	"github.com/xdshard/xdshard/snapshot/source/manifest"
)

// BenchmarkKubernetesSource puts the bench fleet in a real API server
// (100 tenants x 20 services x 5 endpoints: 2,000 Services and
// EndpointSlices, 10,000 Pods), then measures the time from starting a
// replica with --kubeconfig to ready, the heap the replica holds after the
// sync, and how long one EndpointSlice update takes to reach a proxy of its
// tenant, beside the same update as a file edit in a replica serving the
// same fleet from a directory. Run it by hand (it needs XDSHARD_KUBE_BIN;
// loading the fleet takes about a minute):
//
//	XDSHARD_KUBE_BIN=$(scripts/kube-bins.sh) go test -run '^$' -bench KubernetesSource -benchtime 1x ./server
func BenchmarkKubernetesSource(b *testing.B) {
	bin := os.Getenv("XDSHARD_KUBE_BIN")
	if bin == "" {
		b.Skip("needs XDSHARD_KUBE_BIN=$(scripts/kube-bins.sh)")
	}
	ctx := context.Background()
	c := clusterB(b, bin)
	spec := fleet.Spec{Tenants: 100, Services: 20, Endpoints: 5, Seed: 1}
	objs := fleet.Generate(spec)
	// The same fleet as files, one per namespace, as `xdshard bench gen`
	// writes it: an update edits one tenant's file.
	dir := b.TempDir()
	byNS := writeFleet(b, dir, objs)
	loadStart := time.Now()
	applyParallel(b, ctx, c, objs)
	b.Logf("loaded %d objects into the API server in %v", len(objs), time.Since(loadStart).Round(time.Second))

	for b.Loop() {
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		start := time.Now()
		log := slog.New(slog.NewTextHandler(io.Discard, nil))
		src, err := kube.New(kube.Config{Kubeconfig: c.Kubeconfig, Logger: log})
		if err != nil {
			b.Fatal(err)
		}
		rctx, cancel := context.WithCancel(ctx)
		r, err := server.Start(rctx, server.Config{Source: src, XDSAddr: "127.0.0.1:0", Logger: log})
		if err != nil {
			b.Fatal(err)
		}
		synced(b, r.Synced())
		b.ReportMetric(time.Since(start).Seconds(), "s-to-ready")
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "MiB-heap-after-sync")

		fileR := startFileReplica(b, dir)
		kubeLat := updateLatency(b, r, func(gen int) {
			slice, _ := fleet.EndpointSlice(fleet.Tenant(7), "svc-03", "http", 8080, 7, 3, 5, gen)
			applyParallel(b, ctx, c, []*model.Object{slice})
		})
		fileLat := updateLatency(b, fileR, func(gen int) {
			slice, _ := fleet.EndpointSlice(fleet.Tenant(7), "svc-03", "http", 8080, 7, 3, 5, gen)
			list := append([]*model.Object(nil), byNS[fleet.Tenant(7)]...)
			for i, o := range list {
				if o.Key == slice.Key {
					list[i] = slice
				}
			}
			writeNamespace(b, dir, fleet.Tenant(7), list)
		})
		b.ReportMetric(kubeLat.Seconds()*1000, "ms-slice-update-kube")
		b.ReportMetric(fileLat.Seconds()*1000, "ms-slice-update-file")
		cancel()
		r.Close()
	}
}

var (
	benchClusterOnce sync.Once
	benchClusterErr  error
)

func clusterB(b *testing.B, bin string) *kubetest.Cluster {
	benchClusterOnce.Do(func() {
		kubeDir, benchClusterErr = os.MkdirTemp("", "kubebench")
		if benchClusterErr == nil {
			kubeCluster, benchClusterErr = kubetest.Start(context.Background(), bin, kubeDir)
		}
	})
	if benchClusterErr != nil {
		b.Fatal(benchClusterErr)
	}
	return kubeCluster
}

// applyParallel applies objects to the cluster with 16 writers.
func applyParallel(b testing.TB, ctx context.Context, c *kubetest.Cluster, objs []*model.Object) {
	// Namespaces first, on their own: an object of a namespace the API
	// server has not created yet is refused.
	var namespaces, rest []*model.Object
	for _, o := range objs {
		if o.Kind == model.KindNamespace {
			namespaces = append(namespaces, o)
		} else {
			rest = append(rest, o)
		}
	}
	if len(namespaces) > 0 && len(rest) > 0 {
		applyParallel(b, ctx, c, namespaces)
		objs = rest
	}
	clusterIP := regexp.MustCompile(`(?m)^\s*clusterIP: .*\n`)
	work := make(chan *model.Object)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for o := range work {
				if pod, ok := o.Body.(*corev1.Pod); ok { // the API server wants a container
					cp, p := *o, pod.DeepCopy()
					p.Spec.Containers = []corev1.Container{{Name: "app", Image: "example.invalid/app"}}
					cp.Body, o = p, &cp
				}
				var buf bytes.Buffer
				if err := manifest.Encode(&buf, []*model.Object{o}); err != nil {
					errs <- err
					return
				}
				if err := c.Apply(ctx, clusterIP.ReplaceAllString(buf.String(), "")); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for _, o := range objs {
		select {
		case work <- o:
		case err := <-errs:
			b.Fatal(err)
		}
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
}

func startFileReplica(b *testing.B, dir string) *server.Replica {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithCancel(context.Background())
	r, err := server.Start(ctx, server.Config{Source: manifest.NewSource(dir, log), XDSAddr: "127.0.0.1:0", Logger: log})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cancel(); r.Close() })
	synced(b, r.Synced())
	return r
}

// updateLatency is the median, over five updates, of the time from
// change(gen) starting to a proxy of tenant-007 receiving new endpoints.
func updateLatency(b *testing.B, r *server.Replica, change func(gen int)) time.Duration {
	conn, err := grpc.NewClient(r.XDSAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	p := proxy.New(fleet.Tenant(7), "bench-0", false)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = p.Run(ctx, conn) }()
	select {
	case <-p.Synced():
	case <-time.After(30 * time.Second):
		b.Fatal("the proxy never synced")
	}
	var lats []time.Duration
	for gen := 1; gen <= 5; gen++ {
		before := p.Latest(proxy.EDS).Count
		start := time.Now()
		change(100 + gen)
		for p.Latest(proxy.EDS).Count == before {
			if time.Since(start) > 30*time.Second {
				b.Fatal("the update never reached the proxy")
			}
			time.Sleep(time.Millisecond)
		}
		lats = append(lats, p.Latest(proxy.EDS).At.Sub(start))
	}
	slices.Sort(lats)
	return lats[len(lats)/2]
}
