package deploytest

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
)

// loadCompose loads docker-compose.yml the way `docker compose` does (same library), with every
// profile enabled and optional extra override files, so the tests see the merged, validated model.
func loadCompose(t *testing.T, overrides ...types.ConfigFile) *types.Project {
	t.Helper()
	root := repoRoot(t)
	files := append([]types.ConfigFile{{Filename: filepath.Join(root, "docker-compose.yml")}}, overrides...)
	p, err := loader.LoadWithContext(context.Background(), types.ConfigDetails{
		WorkingDir:  root,
		ConfigFiles: files,
		Environment: types.Mapping{},
	}, func(o *loader.Options) {
		o.SetProjectName("wsgw", true)
		o.Profiles = []string{"*"}
	})
	if err != nil {
		t.Fatalf("load docker-compose.yml: %v", err)
	}
	return p
}

func service(t *testing.T, p *types.Project, name string) types.ServiceConfig {
	t.Helper()
	s, err := p.GetService(name)
	if err != nil {
		t.Fatalf("docker-compose.yml: service %q: %v", name, err)
	}
	return s
}

func env(s types.ServiceConfig, key string) string {
	if v := s.Environment[key]; v != nil {
		return *v
	}
	return ""
}

func TestComposeServices(t *testing.T) {
	p := loadCompose(t)
	for _, name := range []string{"redis", "ticker", "gateway", "lb"} {
		service(t, p, name)
	}
	for _, name := range []string{"prometheus", "grafana"} {
		if s := service(t, p, name); !slices.Contains(s.Profiles, "monitoring") {
			t.Errorf("%s: profiles %v, want it under \"monitoring\" so a plain `up` does not start it", name, s.Profiles)
		}
	}
}

// TestComposeGateway checks what scaling and draining the gateway need.
func TestComposeGateway(t *testing.T) {
	gw := service(t, loadCompose(t), "gateway")
	if gw.Build == nil || gw.Build.Dockerfile != "Dockerfile.gateway" {
		t.Errorf("gateway: build %+v, want dockerfile Dockerfile.gateway", gw.Build)
	}
	if !slices.Contains(gw.Expose, "8080") {
		t.Errorf("gateway: expose %v, want 8080 (HAProxy reaches gateway:8080)", gw.Expose)
	}
	if addr := env(gw, "GATEWAY_ADDR"); addr != ":8080" {
		t.Errorf("gateway: GATEWAY_ADDR %q, want \":8080\" to match expose and the HAProxy config", addr)
	}
	if env(gw, "REDIS_URL") == "" {
		t.Error("gateway: REDIS_URL unset: the replicas would each run standalone")
	}
	hc := gw.HealthCheck
	if hc == nil || !slices.Equal([]string(hc.Test), []string{"CMD", "/gateway", "healthcheck"}) {
		t.Errorf("gateway: healthcheck %+v, want test [CMD /gateway healthcheck] (distroless has no shell)", hc)
	}
	shutdown, err := time.ParseDuration(env(gw, "SHUTDOWN_TIMEOUT"))
	if err != nil {
		t.Errorf("gateway: parse SHUTDOWN_TIMEOUT: %v", err)
	}
	if gw.StopGracePeriod == nil || time.Duration(*gw.StopGracePeriod) <= shutdown {
		t.Errorf("gateway: stop_grace_period %v, want more than SHUTDOWN_TIMEOUT %v or Docker kills the drain",
			gw.StopGracePeriod, shutdown)
	}
	if _, err := time.ParseDuration(env(gw, "PRESENCE_TTL")); err != nil {
		t.Errorf("gateway: parse PRESENCE_TTL: %v", err)
	}
	if d, ok := gw.DependsOn["redis"]; !ok || d.Condition != types.ServiceConditionHealthy {
		t.Errorf("gateway: depends_on redis %+v, want condition service_healthy", d)
	}
	// `docker compose up` without --scale (the monitoring profile's command, a plain up)
	// reconciles the service to its default count: it must be the real topology, not 1.
	if gw.Deploy == nil || gw.Deploy.Replicas == nil || *gw.Deploy.Replicas < 3 {
		t.Errorf("gateway: deploy.replicas %v, want 3 so every `docker compose up` keeps three replicas", gw.Deploy)
	}
	drain, err := time.ParseDuration(env(gw, "DRAIN_DELAY"))
	if err != nil {
		t.Errorf("gateway: parse DRAIN_DELAY: %v", err)
	}
	if drain >= shutdown {
		t.Errorf("gateway: DRAIN_DELAY %v, want less than SHUTDOWN_TIMEOUT %v (which bounds the whole drain)", drain, shutdown)
	}
	// A draining gateway must stay up (serving its sockets, refusing upgrades with 503) until
	// HAProxy's checks have taken it out of rotation: inter × fall, plus one check's time.
	inter, fall := haproxyCheckTiming(t)
	if need := inter*time.Duration(fall) + inter/2; drain < need {
		t.Errorf("gateway: DRAIN_DELAY %v, want at least HAProxy's inter %v × fall %d plus slack = %v", drain, inter, fall, need)
	}
}

// haproxyCheckTiming reads the health-check interval and fall count of the committed config.
func haproxyCheckTiming(t *testing.T) (time.Duration, int) {
	t.Helper()
	m := regexp.MustCompile(`(?m)^\s*default-server .*\binter (\S+) .*\bfall (\d+)`).FindStringSubmatch(readRepoFile(t, "deploy/haproxy/haproxy.cfg"))
	if m == nil {
		t.Fatal("deploy/haproxy/haproxy.cfg: no default-server line with inter and fall")
	}
	inter, err := time.ParseDuration(m[1])
	if err != nil {
		t.Fatalf("haproxy.cfg inter %q: %v", m[1], err)
	}
	fall, _ := strconv.Atoi(m[2])
	return inter, fall
}

// TestComposeLBStop: `docker compose stop lb` with WebSockets open ends in a clean exit within
// 5 s: HAProxy's soft stop (SIGUSR1) bounded by hard-stop-after, inside stop_grace_period, so
// Docker never SIGKILLs it (exit 137).
func TestComposeLBStop(t *testing.T) {
	lb := service(t, loadCompose(t), "lb")
	if lb.StopSignal != "SIGUSR1" {
		t.Errorf("lb: stop_signal %q, want SIGUSR1 (HAProxy's soft stop)", lb.StopSignal)
	}
	m := regexp.MustCompile(`(?m)^\s*hard-stop-after (\S+)`).FindStringSubmatch(readRepoFile(t, "deploy/haproxy/haproxy.cfg"))
	if m == nil {
		t.Fatal("deploy/haproxy/haproxy.cfg: no hard-stop-after: open WebSockets keep a soft-stopped HAProxy alive until SIGKILL")
	}
	hard, err := time.ParseDuration(m[1])
	if err != nil {
		t.Fatalf("hard-stop-after %q: %v", m[1], err)
	}
	if lb.StopGracePeriod == nil || time.Duration(*lb.StopGracePeriod) > 5*time.Second ||
		time.Duration(*lb.StopGracePeriod) < hard+2*time.Second {
		t.Errorf("lb: stop_grace_period %v, want at most 5s and at least hard-stop-after %v + 2s", lb.StopGracePeriod, hard)
	}
}

// TestComposeScaled applies `--scale gateway=3` as an override, so compose-go's own consistency
// checks run on the scaled model, then checks what compose-go does not: a published host port
// would make the second replica fail to start.
func TestComposeScaled(t *testing.T) {
	p := loadCompose(t, types.ConfigFile{
		Filename: "scale.override.yml",
		Content:  []byte("services:\n  gateway:\n    scale: 3\n"),
	})
	for _, s := range p.Services {
		if s.GetScale() <= 1 {
			continue
		}
		if s.ContainerName != "" {
			t.Errorf("%s: container_name %q with %d replicas", s.Name, s.ContainerName, s.GetScale())
		}
		for _, port := range s.Ports {
			t.Errorf("%s: publishes host port %q with %d replicas: only one replica could bind it",
				s.Name, port.Published, s.GetScale())
		}
	}
	if gw := service(t, p, "gateway"); gw.GetScale() != 3 {
		t.Errorf("gateway scale after override: %d, want 3", gw.GetScale())
	}
	if err := p.CheckContainerNameUnicity(); err != nil {
		t.Error(err)
	}
}

func TestComposeTickerAndRedis(t *testing.T) {
	p := loadCompose(t)
	tk := service(t, p, "ticker")
	if tk.Build == nil || tk.Build.Dockerfile != "Dockerfile.ticker" {
		t.Errorf("ticker: build %+v, want dockerfile Dockerfile.ticker", tk.Build)
	}
	if got := env(tk, "REDIS_URL"); !strings.HasPrefix(got, "redis://redis:6379") {
		t.Errorf("ticker: REDIS_URL %q, want redis://redis:6379/...", got)
	}
	if d, ok := tk.DependsOn["redis"]; !ok || d.Condition != types.ServiceConditionHealthy {
		t.Errorf("ticker: depends_on redis %+v, want condition service_healthy", d)
	}
	if tk.GetScale() < 2 {
		t.Errorf("ticker: %d replicas, want 2 so a standby can take the lease", tk.GetScale())
	}

	rd := service(t, p, "redis")
	name, tag, ok := strings.Cut(rd.Image, ":")
	if !ok || tag == "latest" || !regexp.MustCompile(`^\d+\.\d+`).MatchString(tag) {
		t.Errorf("redis: image %q, want a pinned version tag", rd.Image)
	}
	if name != "redis" && name != "valkey/valkey" {
		t.Errorf("redis: image %q, want the official redis (or valkey) image", rd.Image)
	}
	if rd.HealthCheck == nil || !slices.Contains([]string(rd.HealthCheck.Test), "ping") {
		t.Errorf("redis: healthcheck %+v, want redis-cli ping: gateway and ticker wait for it", rd.HealthCheck)
	}
}

func TestComposeLB(t *testing.T) {
	root := repoRoot(t)
	lb := service(t, loadCompose(t), "lb")
	if _, tag, ok := strings.Cut(lb.Image, ":"); !strings.HasPrefix(lb.Image, "haproxy:") || !ok || tag == "latest" {
		t.Errorf("lb: image %q, want a pinned haproxy tag", lb.Image)
	}
	published := false
	for _, port := range lb.Ports {
		published = published || (port.Published == "8080" && port.Target == 8080)
	}
	if !published {
		t.Errorf("lb: ports %+v, want 8080:8080", lb.Ports)
	}
	mounted := false
	for _, v := range lb.Volumes {
		if v.Target != "/usr/local/etc/haproxy/haproxy.cfg" {
			continue
		}
		mounted = true
		if want := filepath.Join(root, "deploy", "haproxy", "haproxy.cfg"); v.Source != want {
			t.Errorf("lb: haproxy.cfg mounted from %s, want %s", v.Source, want)
		}
		if !v.ReadOnly {
			t.Error("lb: haproxy.cfg mount is writable, want :ro")
		}
	}
	if !mounted {
		t.Error("lb: no volume mounts /usr/local/etc/haproxy/haproxy.cfg")
	}
	if _, ok := lb.DependsOn["gateway"]; !ok {
		t.Error("lb: does not depend on gateway")
	}
}

// TestComposeMatchesHAProxy checks the names and ports the two files share: HAProxy must look up
// the service compose defines, on the port the gateway listens on, and listen where lb publishes.
func TestComposeMatchesHAProxy(t *testing.T) {
	p := loadCompose(t)
	cfg := readRepoFile(t, "deploy/haproxy/haproxy.cfg")
	m := regexp.MustCompile(`(?m)^\s*server-template \S+ 1-(\d+) ([\w.-]+):(\d+) `).FindStringSubmatch(cfg)
	if m == nil {
		t.Fatal("deploy/haproxy/haproxy.cfg: no server-template line")
	}
	gw := service(t, p, m[2])
	if !slices.Contains(gw.Expose, m[3]) || !strings.HasSuffix(env(gw, "GATEWAY_ADDR"), ":"+m[3]) {
		t.Errorf("haproxy.cfg targets %s:%s; service %s exposes %v with GATEWAY_ADDR %q",
			m[2], m[3], m[2], gw.Expose, env(gw, "GATEWAY_ADDR"))
	}
	lb := service(t, p, "lb")
	for _, port := range lb.Ports {
		bind := fmt.Sprintf("\n    bind :%d\n", port.Target)
		if !strings.Contains(cfg, bind) {
			t.Errorf("lb publishes container port %d, but haproxy.cfg has no %q", port.Target, strings.TrimSpace(bind))
		}
	}
}

// TestComposeBindMountsExist catches a renamed or uncommitted config file: Docker would
// silently create an empty directory in its place.
func TestComposeBindMountsExist(t *testing.T) {
	p := loadCompose(t)
	for _, s := range p.Services {
		for _, v := range s.Volumes {
			if v.Type != types.VolumeTypeBind {
				continue
			}
			if _, err := os.Stat(v.Source); err != nil {
				t.Errorf("%s: bind mount source: %v", s.Name, err)
			}
		}
	}
}

// knownVars is PROTOCOL.md's configuration table: variable → programs that read it. Used when
// PROTOCOL.md itself is not next to the repository.
var knownVars = map[string][]string{
	"REDIS_URL": {"gateway", "ticker"}, "REDIS_SENTINEL_MASTER": {"gateway", "ticker"},
	"REDIS_ADDRS": {"gateway", "ticker"}, "REDIS_PREFIX": {"gateway", "ticker"},
	"GATEWAY_ADDR": {"gateway"}, "GATEWAY_ID": {"gateway"}, "FIB_MAX_N": {"gateway"},
	"FIB_RATE": {"gateway"}, "FIB_BURST": {"gateway"}, "READ_LIMIT": {"gateway"},
	"ALLOWED_ORIGINS": {"gateway"}, "PRESENCE_TTL": {"gateway"}, "SHUTDOWN_TIMEOUT": {"gateway"},
	"TICK_INTERVAL": {"ticker", "gateway"}, "TICKER_ID": {"ticker"}, "LEASE_TTL": {"ticker"},
	"LOG_LEVEL": {"gateway", "ticker", "client"}, "LOG_FORMAT": {"gateway", "ticker", "client"},
}

// protocolVars reads the configuration table from PROTOCOL.md when it can be found (the shared
// copy beside the repository, or one inside it), falling back to knownVars.
func protocolVars(t *testing.T) map[string][]string {
	root := repoRoot(t)
	for _, rel := range []string{"PROTOCOL.md", "docs/PROTOCOL.md", "../shared/PROTOCOL.md"} {
		f, err := os.Open(filepath.Join(root, rel))
		if err != nil {
			continue
		}
		defer f.Close()
		vars := map[string][]string{}
		row := regexp.MustCompile("^\\|\\s*(`[A-Z_]+`(?:\\s*,\\s*`[A-Z_]+`)*)\\s*\\|([^|]*)\\|")
		name := regexp.MustCompile("`([A-Z_]+)`")
		for sc := bufio.NewScanner(f); sc.Scan(); {
			m := row.FindStringSubmatch(sc.Text())
			if m == nil {
				continue
			}
			programs := strings.FieldsFunc(m[2], func(r rune) bool { return r == ',' || r == ' ' })
			for _, n := range name.FindAllStringSubmatch(m[1], -1) {
				vars[n[1]] = append(vars[n[1]], programs...)
			}
		}
		if len(vars) > 0 {
			t.Logf("configuration variables from %s", rel)
			return vars
		}
	}
	t.Log("PROTOCOL.md not found; using the variables listed in compose_test.go")
	return knownVars
}

// TestComposeEnvInContract checks that every variable compose sets is one the program reads
// per PROTOCOL.md and, once the program builds, that its -h lists it: a misspelt variable would
// otherwise be ignored silently and the default used.
func TestComposeEnvInContract(t *testing.T) {
	p := loadCompose(t)
	vars := protocolVars(t)
	for _, prog := range []string{"gateway", "ticker"} {
		s := service(t, p, prog)
		for key := range s.Environment {
			if !slices.Contains(vars[key], prog) {
				t.Errorf("%s: environment %s is not a %s setting in PROTOCOL.md", prog, key, prog)
			}
		}
		t.Run(prog+"-h", func(t *testing.T) {
			t.Parallel()
			bin := buildProgram(t, prog)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "-h")
			cmd.Env = []string{}
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Errorf("%s -h: %v (PROTOCOL.md: -h prints every variable and exits 0)", prog, err)
			}
			for key := range s.Environment {
				switch {
				case strings.Contains(string(out), key):
				default:
					t.Errorf("%s -h does not mention %s, which docker-compose.yml sets:\n%s", prog, key, out)
				}
			}
		})
	}
}
