package check

import (
	"encoding/json"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// TestKubernetesImages: the containers run the images built from the Dockerfiles, the way the
// Dockerfiles mean them to run: the tag the Dockerfile's build line gives, its exposed ports,
// its non-root user, its entrypoint (no command override, so SIGTERM reaches the program as
// PID 1), its HEALTHCHECK as the exec probe. The example's Redis is compose's image.
func TestKubernetesImages(t *testing.T) {
	base, ex := render(t, kustomizations[0]), render(t, kustomizations[1])
	for _, prog := range []string{"gateway", "ticker"} {
		df := parseDockerfile(t, "Dockerfile."+prog)
		bc := container(t, &base.deployment(t, "wsgw-"+prog).Spec.Template.Spec, prog)
		if bc.Image != df.tag {
			t.Errorf("base %s: image %q, want %q (Dockerfile.%s: docker build -t %s)", prog, bc.Image, df.tag, prog, df.tag)
		}
		d := ex.deployment(t, "wsgw-"+prog)
		c := container(t, &d.Spec.Template.Spec, prog)
		if c.Image == df.tag || strings.HasPrefix(c.Image, df.tag+":") {
			t.Errorf("example %s: image %q: the overlay's images: entry does not rewrite %s", prog, c.Image, df.tag)
		}
		for _, port := range df.expose {
			if _, ok := containerPort(c, intstr.FromInt32(port)); !ok {
				t.Errorf("%s: Dockerfile exposes %d; the container declares %v", prog, port, c.Ports)
			}
		}
		if len(c.Command) > 0 {
			t.Errorf("%s: command %v overrides the Dockerfile's ENTRYPOINT %v", prog, c.Command, df.entrypoint)
		}
		ps := d.Spec.Template.Spec.SecurityContext
		if df.user == "nonroot:nonroot" && (ps == nil || ps.RunAsUser == nil || *ps.RunAsUser != 65532 || ps.RunAsNonRoot == nil || !*ps.RunAsNonRoot) {
			t.Errorf("%s: pod securityContext %v, want runAsNonRoot and runAsUser 65532 (distroless nonroot, the Dockerfile's USER)", prog, ps)
		}
		for _, p := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe, c.StartupProbe} {
			if p != nil && p.Exec != nil && !slices.Equal(p.Exec.Command, df.healthcheck) {
				t.Errorf("%s: exec probe %v, want the Dockerfile's HEALTHCHECK %v", prog, p.Exec.Command, df.healthcheck)
			}
		}
	}
	compose := loadComposeFile(t)
	rs := ex.statefulSets["redis"]
	if rs == nil {
		t.Fatal("example: no Redis StatefulSet")
	}
	if got, want := rs.Spec.Template.Spec.Containers[0].Image, compose.Services["redis"].Image; got != want {
		t.Errorf("example Redis image %q, want compose's %q", got, want)
	}
}

// TestKubernetesAdminPorts: the admin port of every pod that has one is closed to everything
// outside the namespace: some NetworkPolicy selects the pod, and every rule that admits the
// port names peers by podSelector alone (no namespaceSelector, no ipBlock, never "from anyone").
func TestKubernetesAdminPorts(t *testing.T) {
	for _, dir := range kustomizations {
		m := render(t, dir)
		for _, d := range m.deployments {
			pod := d.Spec.Template.Spec
			set := labels.Set(d.Spec.Template.Labels)
			for _, c := range pod.Containers {
				admin, ok := containerPort(&c, intstr.FromString("admin"))
				if !ok {
					continue
				}
				selected := false
				for _, np := range m.policies {
					if !selects(t, &np.Spec.PodSelector, set) || !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) {
						continue
					}
					selected = true
					for i, rule := range np.Spec.Ingress {
						if !admits(&c, rule.Ports, admin) {
							continue
						}
						if len(rule.From) == 0 {
							t.Errorf("%s: NetworkPolicy %s rule %d admits anyone to %s's admin port %d", dir, np.Name, i, d.Name, admin)
						}
						for _, peer := range rule.From {
							if peer.NamespaceSelector != nil || peer.IPBlock != nil || peer.PodSelector == nil {
								t.Errorf("%s: NetworkPolicy %s rule %d admits peers outside the namespace to %s's admin port: %s",
									dir, np.Name, i, d.Name, jsonString(peer))
							}
						}
					}
				}
				if !selected {
					t.Errorf("%s: no ingress NetworkPolicy selects %s, so its admin port %d is open", dir, d.Name, admin)
				}
			}
		}
	}
}

// admits reports whether a rule's ports include port (an empty list means every port).
func admits(c *corev1.Container, ports []networkingv1.NetworkPolicyPort, port int32) bool {
	if len(ports) == 0 {
		return true
	}
	for _, p := range ports {
		if p.Port == nil {
			return true
		}
		if n, ok := containerPort(c, *p.Port); ok && n == port {
			return true
		}
		if p.Port.Type == intstr.Int && p.Port.IntVal == port {
			return true
		}
	}
	return false
}

// dockerfile is what the checks read from a Dockerfile: the tag its build comment gives, the
// final stage's EXPOSE, USER, ENTRYPOINT and HEALTHCHECK command.
type dockerfile struct {
	tag         string
	expose      []int32
	user        string
	entrypoint  []string
	healthcheck []string
}

func parseDockerfile(t *testing.T, rel string) dockerfile {
	t.Helper()
	text := string(readRepoFile(t, rel))
	var df dockerfile
	if m := regexp.MustCompile(`(?m)^#.*docker build -f ` + regexp.QuoteMeta(rel) + ` -t (\S+) `).FindStringSubmatch(text); m != nil {
		df.tag = m[1]
	} else {
		t.Fatalf("%s: no `docker build -f %s -t NAME` line naming the image", rel, rel)
	}
	// The final stage is everything after the last FROM.
	final := text[strings.LastIndex(text, "\nFROM "):]
	for _, line := range strings.Split(final, "\n") {
		cmd, args, _ := strings.Cut(strings.TrimSpace(line), " ")
		switch cmd {
		case "EXPOSE":
			for _, f := range strings.Fields(args) {
				n, err := strconv.Atoi(strings.TrimSuffix(f, "/tcp"))
				if err != nil {
					t.Fatalf("%s: EXPOSE %s: %v", rel, f, err)
				}
				df.expose = append(df.expose, int32(n))
			}
		case "USER":
			df.user = args
		case "ENTRYPOINT":
			df.entrypoint = execArgs(t, rel, args)
		case "HEALTHCHECK":
			_, c, ok := strings.Cut(args, "CMD ")
			if !ok {
				t.Fatalf("%s: HEALTHCHECK without CMD", rel)
			}
			df.healthcheck = execArgs(t, rel, c)
		}
	}
	return df
}

func execArgs(t *testing.T, rel, s string) []string {
	t.Helper()
	var argv []string
	if err := json.Unmarshal([]byte(strings.TrimSpace(s)), &argv); err != nil {
		t.Fatalf("%s: %q is not exec form: %v", rel, s, err)
	}
	return argv
}
