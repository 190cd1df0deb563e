package opstate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/cespare/xxhash/v2"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/xdshard/xdshard/snapshot"
)

// DecisionLabel marks the ConfigMaps that keep decisions.
const DecisionLabel = "xdshard.io/decision"

// MaxConfigMapBytes is the most a pinned snapshot may take, compressed, in
// a ConfigMap (the API server takes at most 1 MiB of data per object).
const MaxConfigMapBytes = 1000 << 10

// ErrTooBig says a decision is too big for where it would be kept.
var ErrTooBig = errors.New("too big to keep")

// ConfigMaps keeps decisions as ConfigMaps in a namespace (the replicas'
// own), one per tenant decided about, named xdshard-decision-HASH and
// labelled xdshard.io/decision: the record in data, the pinned snapshot
// compressed in binaryData. A pinned snapshot larger than
// MaxConfigMapBytes compressed is not kept (Keep says so): the pin then
// holds only while a replica holding it runs.
type ConfigMaps struct {
	client    kubernetes.Interface
	namespace string
}

// NewConfigMaps keeps decisions in namespace through the API server rc
// names.
var _ Keeper = (*ConfigMaps)(nil)

func NewConfigMaps(rc *rest.Config, namespace string) (*ConfigMaps, error) {
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	return &ConfigMaps{client: cs, namespace: namespace}, nil
}

// Where names the namespace.
func (c *ConfigMaps) Where() string {
	return "ConfigMaps labelled " + DecisionLabel + " in namespace " + c.namespace
}

func configMapName(tenant string) string {
	return fmt.Sprintf("xdshard-decision-%016x", xxhash.Sum64String(tenant))
}

// Keep creates, updates or deletes tenant's ConfigMap. Updates and
// deletes name the resourceVersion read, and are tried again on a
// conflict.
func (c *ConfigMaps) Keep(ctx context.Context, d Decision) error {
	var pinned []byte
	if d.Pinned != nil {
		var err error
		if pinned, err = snapshot.MarshalKept(d.Pinned); err != nil {
			return err
		}
		if len(pinned) > MaxConfigMapBytes {
			return fmt.Errorf("%w: the pinned version %s of tenant %q is %d bytes compressed, more than a ConfigMap holds (%d): the pin holds only while a replica that holds it runs", ErrTooBig, d.Pinned.Version, d.Tenant, len(pinned), MaxConfigMapBytes)
		}
	}
	rec, err := json.Marshal(recordOf(d))
	if err != nil {
		return err
	}
	cms := c.client.CoreV1().ConfigMaps(c.namespace)
	name := configMapName(d.Tenant)
	for try := 0; ; try++ {
		err := c.keepOnce(ctx, cms, name, d, rec, pinned)
		if !apierrors.IsConflict(err) || try == 4 {
			if err != nil {
				return fmt.Errorf("keeping the decision about tenant %q in ConfigMap %s/%s: %w", d.Tenant, c.namespace, name, err)
			}
			return nil
		}
	}
}

func (c *ConfigMaps) keepOnce(ctx context.Context, cms interface {
	Get(context.Context, string, metav1.GetOptions) (*corev1.ConfigMap, error)
	Create(context.Context, *corev1.ConfigMap, metav1.CreateOptions) (*corev1.ConfigMap, error)
	Update(context.Context, *corev1.ConfigMap, metav1.UpdateOptions) (*corev1.ConfigMap, error)
	Delete(context.Context, string, metav1.DeleteOptions) error
}, name string, d Decision, rec, pinned []byte) error {
	cur, err := cms.Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		if d.Empty() {
			return nil
		}
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: c.namespace,
			Labels: map[string]string{DecisionLabel: "true", "app.kubernetes.io/managed-by": "xdshard"}}}
		fill(cm, rec, pinned)
		_, err = cms.Create(ctx, cm, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return apierrors.NewConflict(corev1.Resource("configmaps"), name, err)
		}
		return err
	case err != nil:
		return err
	case d.Empty():
		rv := cur.ResourceVersion
		err := cms.Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: &rv}})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return err
	}
	cm := cur.DeepCopy()
	fill(cm, rec, pinned)
	_, err = cms.Update(ctx, cm, metav1.UpdateOptions{}) // carries cur's resourceVersion: a write between fails as a conflict
	return err
}

func fill(cm *corev1.ConfigMap, rec, pinned []byte) {
	cm.Data = map[string]string{"decision.json": string(rec)}
	cm.BinaryData = nil
	if pinned != nil {
		cm.BinaryData = map[string][]byte{"pinned.pb.gz": pinned}
	}
}

// Load lists the namespace's decision ConfigMaps.
func (c *ConfigMaps) Load(ctx context.Context) ([]Decision, []error, error) {
	list, err := c.client.CoreV1().ConfigMaps(c.namespace).List(ctx, metav1.ListOptions{LabelSelector: DecisionLabel + "=true"})
	if err != nil {
		return nil, nil, fmt.Errorf("reading kept decisions (%s): %w", c.Where(), err)
	}
	var out []Decision
	var errs []error
	for _, cm := range list.Items {
		var r record
		d, err := Decision{}, json.Unmarshal([]byte(cm.Data["decision.json"]), &r)
		if err == nil {
			d, err = r.decision(cm.BinaryData["pinned.pb.gz"])
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("ConfigMap %s/%s: %w (delete it to forget that decision)", c.namespace, cm.Name, err))
			continue
		}
		out = append(out, d)
	}
	return out, errs, nil
}
