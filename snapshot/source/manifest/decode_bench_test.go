package manifest

import "testing"

// vsDoc is one of the bench fleet's VirtualServices: what a file-driven
// weight change makes the source decode, 38 times per tenant file.
const vsDoc = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: svc-00
  namespace: tenant-000
spec:
  hosts:
  - svc-00
  http:
  - route:
    - destination:
        host: svc-00
        subset: v1
      weight: 76
    - destination:
        host: svc-00
        subset: v2
      weight: 24
`

// BenchmarkDecodeVirtualService decodes one small VirtualService document
// of a file, as the source decodes an edited document (decodeChunk).
// TestDecodeVirtualServiceBench checks what it decodes.
func BenchmarkDecodeVirtualService(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if d := decodeChunk("bench.yaml", chunk{line: 40, body: []byte(vsDoc)}, Limits{}); len(d) != 1 || d[0].Object == nil {
			b.Fatal(d)
		}
	}
}

func TestDecodeVirtualServiceBench(t *testing.T) {
	d := decodeChunk("bench.yaml", chunk{line: 40, body: []byte(vsDoc)}, Limits{})
	if len(d) != 1 || d[0].Object == nil || d[0].Diag != nil {
		t.Fatalf("decoded %+v", d)
	}
	if o := d[0].Object; o.Key.Name != "svc-00" || o.Key.Namespace != "tenant-000" || o.Origin.Line != 40 {
		t.Fatalf("decoded %+v", o)
	}
}
