package check

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/wsgw/wsgw/pkg/broker"
	"github.com/wsgw/wsgw/pkg/config"
	"github.com/wsgw/wsgw/pkg/gateway"
	"github.com/wsgw/wsgw/pkg/metrics"
	"github.com/wsgw/wsgw/pkg/presence"
)

// manifests is one kustomization rendered and decoded.
type manifests struct {
	dir          string
	deployments  map[string]*appsv1.Deployment
	statefulSets map[string]*appsv1.StatefulSet
	services     map[string]*corev1.Service
	secrets      map[string]*corev1.Secret
	policies     []*networkingv1.NetworkPolicy
	ingresses    []*networkingv1.Ingress
	pdbs         []*policyv1.PodDisruptionBudget
	hpas         []*autoscalingv2.HorizontalPodAutoscaler
}

// render builds a kustomization with krusty (what `kubectl kustomize` runs) and decodes every
// object strictly with the k8s.io/api types: an unknown or duplicated field fails, as it
// would on `kubectl apply --validate=strict`.
func render(t *testing.T, rel string) *manifests {
	t.Helper()
	dir := filepath.Join(repoRoot(t), filepath.FromSlash(rel))
	rm, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", rel, err)
	}
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, policyv1.AddToScheme,
		autoscalingv2.AddToScheme, networkingv1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	dec := kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, scheme, scheme, kjson.SerializerOptions{Strict: true})
	m := &manifests{dir: rel, deployments: map[string]*appsv1.Deployment{}, statefulSets: map[string]*appsv1.StatefulSet{},
		services: map[string]*corev1.Service{}, secrets: map[string]*corev1.Secret{}}
	for _, r := range rm.Resources() {
		b, err := r.MarshalJSON()
		if err != nil {
			t.Fatalf("%s: %s: %v", rel, r.CurId(), err)
		}
		obj, _, err := dec.Decode(b, nil, nil)
		if err != nil {
			t.Errorf("%s: %s does not decode strictly: %v", rel, r.CurId(), err)
			continue
		}
		switch o := obj.(type) {
		case *appsv1.Deployment:
			m.deployments[o.Name] = o
		case *appsv1.StatefulSet:
			m.statefulSets[o.Name] = o
		case *corev1.Service:
			m.services[o.Name] = o
		case *corev1.Secret:
			m.secrets[o.Name] = o
		case *corev1.Namespace:
		case *networkingv1.NetworkPolicy:
			m.policies = append(m.policies, o)
		case *networkingv1.Ingress:
			m.ingresses = append(m.ingresses, o)
		case *policyv1.PodDisruptionBudget:
			m.pdbs = append(m.pdbs, o)
		case *autoscalingv2.HorizontalPodAutoscaler:
			m.hpas = append(m.hpas, o)
		default:
			t.Errorf("%s: %s: a kind these checks do not know (%T); teach them", rel, r.CurId(), obj)
		}
	}
	return m
}

func (m *manifests) deployment(t *testing.T, name string) *appsv1.Deployment {
	t.Helper()
	d, ok := m.deployments[name]
	if !ok {
		t.Fatalf("%s: no Deployment %s", m.dir, name)
	}
	return d
}

// container returns the pod's container named name.
func container(t *testing.T, spec *corev1.PodSpec, name string) *corev1.Container {
	t.Helper()
	for i := range spec.Containers {
		if spec.Containers[i].Name == name {
			return &spec.Containers[i]
		}
	}
	t.Fatalf("no container %q", name)
	return nil
}

// containerPort resolves a probe's or a Service's port (a number or a port name).
func containerPort(c *corev1.Container, p intstr.IntOrString) (int32, bool) {
	for _, cp := range c.Ports {
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return cp.ContainerPort, true
		}
	}
	return 0, false
}

// environ is the container's environment as the program sees it, in os.Environ() form:
// literals, Secret keys looked up in the rendered Secrets (missing optional keys stay unset),
// and field references given a pod-like value.
func (m *manifests) environ(t *testing.T, c *corev1.Container) []string {
	t.Helper()
	var env []string
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env = append(env, e.Name+"="+e.Value)
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			s, ok := m.secrets[ref.Name]
			if !ok {
				continue // the base leaves the Secret to the operator
			}
			v, ok := s.Data[ref.Key]
			if !ok {
				if v, ok := s.StringData[ref.Key]; ok {
					env = append(env, e.Name+"="+v)
					continue
				}
				if ref.Optional == nil || !*ref.Optional {
					t.Errorf("%s: %s: %s from Secret %s key %s, which the Secret lacks", m.dir, c.Name, e.Name, ref.Name, ref.Key)
				}
				continue
			}
			env = append(env, e.Name+"="+string(v))
		case e.ValueFrom.FieldRef != nil:
			env = append(env, e.Name+"=wsgw-pod-0")
		default:
			t.Errorf("%s: %s: %s has a valueFrom these checks do not know", m.dir, c.Name, e.Name)
		}
	}
	return env
}

func envValue(environ []string, name string) string {
	for _, kv := range environ {
		if k, v, _ := strings.Cut(kv, "="); k == name {
			return v
		}
	}
	return ""
}

func portOf(t *testing.T, addr string) int32 {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	return int32(n)
}

// kustomizations are the directories rendered by every test.
var kustomizations = []string{"deploy/kubernetes/base", "deploy/kubernetes/overlays/example"}

// TestKubernetesRenders renders the base and the example overlay: every object decodes
// strictly, and the overlay is a complete installation (its Redis Secret resolves).
func TestKubernetesRenders(t *testing.T) {
	for _, dir := range kustomizations {
		m := render(t, dir)
		for _, name := range []string{"wsgw-gateway", "wsgw-ticker"} {
			m.deployment(t, name)
		}
		if _, ok := m.services["wsgw-gateway"]; !ok {
			t.Errorf("%s: no Service wsgw-gateway", dir)
		}
		if len(m.pdbs) == 0 || len(m.hpas) == 0 || len(m.policies) == 0 {
			t.Errorf("%s: %d PodDisruptionBudgets, %d HorizontalPodAutoscalers, %d NetworkPolicies; want each", dir, len(m.pdbs), len(m.hpas), len(m.policies))
		}
	}
	base := render(t, kustomizations[0])
	if len(base.statefulSets) > 0 || len(base.secrets) > 0 {
		t.Errorf("base: Redis is an external dependency; want no StatefulSet or Secret in the base (found %d, %d)", len(base.statefulSets), len(base.secrets))
	}
	ex := render(t, kustomizations[1])
	if rs, ok := ex.statefulSets["redis"]; !ok || rs.Spec.Replicas == nil || *rs.Spec.Replicas != 1 {
		t.Error("example overlay: want a single-replica Redis StatefulSet")
	}
	if len(ex.ingresses) == 0 {
		t.Error("example overlay: no Ingress")
	}
}

// TestKubernetesEnv checks every variable the containers set is one the program reads, and
// that the programs accept the whole environment (the overlay's, with its Redis Secret): a bad
// value would stop the pod at start in a crash loop.
func TestKubernetesEnv(t *testing.T) {
	for _, dir := range kustomizations {
		m := render(t, dir)
		for prog, load := range map[string]func([]string) error{
			"gateway": func(env []string) error { _, err := config.LoadGateway(env); return err },
			"ticker":  func(env []string) error { _, err := config.LoadTicker(env); return err },
		} {
			d := m.deployment(t, "wsgw-"+prog)
			c := container(t, &d.Spec.Template.Spec, prog)
			for _, e := range c.Env {
				checkVar(t, dir+" "+d.Name, prog, e.Name)
			}
			if len(m.secrets) == 0 {
				continue // the base: Redis settings come from the operator's Secret
			}
			if err := load(m.environ(t, c)); err != nil {
				t.Errorf("%s: %s's environment does not load: %v", dir, prog, err)
			}
		}
	}
}

// TestKubernetesGatewayLifecycle: the probes hit endpoints the gateway really serves, on the
// port it listens on; the kubelet's SIGKILL comes after SHUTDOWN_TIMEOUT; DRAIN_DELAY covers
// endpoint propagation; the budget, autoscaler, Service and spread fit the Deployment.
func TestKubernetesGatewayLifecycle(t *testing.T) {
	m := render(t, kustomizations[1])
	d := m.deployment(t, "wsgw-gateway")
	pod := &d.Spec.Template.Spec
	c := container(t, pod, "gateway")
	cfg, err := config.LoadGateway(m.environ(t, c))
	if err != nil {
		t.Fatal(err)
	}
	listen := portOf(t, cfg.Addr)

	srv := gateway.NewServer(slog.New(slog.DiscardHandler), metrics.New(), broker.NewMemory(), presence.NewMemory(), gateway.Options{})
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Drain(ctx)
	})
	h := srv.Handler()
	for kind, p := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
		if p == nil || p.HTTPGet == nil {
			t.Errorf("gateway: %s probe %v, want an httpGet", kind, p)
			continue
		}
		want := map[string]string{"readiness": "/readyz", "liveness": "/healthz"}[kind]
		if p.HTTPGet.Path != want {
			t.Errorf("gateway: %s probe on %s, want %s", kind, p.HTTPGet.Path, want)
		}
		port, ok := containerPort(c, p.HTTPGet.Port)
		if !ok || port != listen {
			t.Errorf("gateway: %s probe port %s resolves to %d (found %v); the gateway listens on %d (GATEWAY_ADDR %s)",
				kind, p.HTTPGet.Port.String(), port, ok, listen, cfg.Addr)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, p.HTTPGet.Path, nil))
		if rec.Code != http.StatusOK {
			t.Errorf("gateway: %s probe GET %s answers %d on a healthy gateway, want 200", kind, p.HTTPGet.Path, rec.Code)
		}
	}

	grace := time.Duration(*pod.TerminationGracePeriodSeconds) * time.Second
	if pod.TerminationGracePeriodSeconds == nil || grace <= cfg.ShutdownTimeout {
		t.Errorf("gateway: terminationGracePeriodSeconds %v, want more than SHUTDOWN_TIMEOUT %v", grace, cfg.ShutdownTimeout)
	}
	// The pod leaves the Service's endpoints when it gets SIGTERM, but kube-proxy and ingress
	// controllers learn it seconds later: until then they still send it new clients.
	if cfg.DrainDelay < 5*time.Second {
		t.Errorf("gateway: DRAIN_DELAY %v, want at least 5s to cover endpoint propagation", cfg.DrainDelay)
	}
	if p := c.ReadinessProbe; p != nil && time.Duration(p.PeriodSeconds*p.FailureThreshold)*time.Second > cfg.DrainDelay {
		t.Errorf("gateway: readiness takes %ds × %d to fail, longer than DRAIN_DELAY %v", p.PeriodSeconds, p.FailureThreshold, cfg.DrainDelay)
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("gateway: resources %v, want cpu and memory requests and a memory limit", c.Resources)
	}
	if len(pod.TopologySpreadConstraints) == 0 {
		t.Error("gateway: no topologySpreadConstraints")
	}
	podLabels := labels.Set(d.Spec.Template.Labels)
	for _, tsc := range pod.TopologySpreadConstraints {
		if !selects(t, tsc.LabelSelector, podLabels) {
			t.Errorf("gateway: topology spread on %s does not select the gateway pods", tsc.TopologyKey)
		}
	}
	if s := d.Spec.Strategy.RollingUpdate; s == nil || s.MaxUnavailable == nil || s.MaxUnavailable.IntValue() != 0 {
		t.Error("gateway: want a rolling update with maxUnavailable 0, so capacity never drops during a rollout")
	}

	pdbOK := false
	for _, p := range m.pdbs {
		pdbOK = pdbOK || selects(t, p.Spec.Selector, podLabels)
	}
	if !pdbOK {
		t.Error("gateway: no PodDisruptionBudget selects the gateway pods")
	}
	hpaOK := false
	for _, h := range m.hpas {
		ref := h.Spec.ScaleTargetRef
		if ref.Kind == "Deployment" && ref.Name == d.Name {
			hpaOK = true
			if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas < 2 {
				t.Errorf("gateway: HorizontalPodAutoscaler minReplicas %v, want at least 2", h.Spec.MinReplicas)
			}
		}
	}
	if !hpaOK {
		t.Error("gateway: no HorizontalPodAutoscaler targets the gateway Deployment")
	}

	svc := m.services["wsgw-gateway"]
	if svc == nil || !labels.SelectorFromSet(svc.Spec.Selector).Matches(podLabels) {
		t.Fatal("Service wsgw-gateway does not select the gateway pods")
	}
	for _, sp := range svc.Spec.Ports {
		if port, ok := containerPort(c, sp.TargetPort); !ok || port != listen {
			t.Errorf("Service wsgw-gateway port %s → %s, want the gateway's listening port %d", sp.Name, sp.TargetPort.String(), listen)
		}
	}
	for _, ing := range m.ingresses {
		for _, rule := range ing.Spec.Rules {
			for _, p := range rule.HTTP.Paths {
				b := p.Backend.Service
				if b == nil || m.services[b.Name] == nil {
					t.Errorf("Ingress %s: backend %v is not a Service of the installation", ing.Name, p.Backend)
					continue
				}
				if !slices.ContainsFunc(m.services[b.Name].Spec.Ports, func(sp corev1.ServicePort) bool {
					return (b.Port.Name != "" && sp.Name == b.Port.Name) || (b.Port.Number != 0 && sp.Port == b.Port.Number)
				}) {
					t.Errorf("Ingress %s: backend port %v is not a port of Service %s", ing.Name, b.Port, b.Name)
				}
			}
		}
		if v, err := strconv.Atoi(ing.Annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]); err != nil || v < 600 {
			t.Errorf("Ingress %s: proxy-read-timeout %q, want long enough for WebSockets (at least 600 s)", ing.Name, ing.Annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"])
		}
	}
}

// selects reports whether a label selector matches a pod's labels (an empty selector matches
// every pod, as in a NetworkPolicy).
func selects(t *testing.T, ls *metav1.LabelSelector, set labels.Set) bool {
	t.Helper()
	sel, err := metav1.LabelSelectorAsSelector(ls)
	if err != nil {
		t.Errorf("label selector %s: %v", jsonString(ls), err)
		return false
	}
	return sel.Matches(set)
}

// TestKubernetesTicker: two replicas, and the exec probe is the image's own health check.
func TestKubernetesTicker(t *testing.T) {
	m := render(t, kustomizations[1])
	d := m.deployment(t, "wsgw-ticker")
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
		t.Errorf("ticker: replicas %v, want 2 (one publishes, one stands by)", d.Spec.Replicas)
	}
	c := container(t, &d.Spec.Template.Spec, "ticker")
	if c.LivenessProbe != nil && c.LivenessProbe.Exec != nil {
		t.Error("ticker: a liveness probe that PINGs Redis restarts both tickers in a Redis outage")
	}
}
