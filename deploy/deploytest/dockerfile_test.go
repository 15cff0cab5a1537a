package deploytest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wsgw/wsgw/internal/testkit"
)

// instruction is one Dockerfile instruction with its continuation lines joined.
type instruction struct {
	cmd  string // upper case: FROM, RUN, COPY, ...
	args string
}

// stage is one FROM ... section of a multi-stage Dockerfile.
type stage struct {
	from   string // image reference
	name   string // AS name, if any
	instrs []instruction
}

// parseDockerfile splits a Dockerfile into stages. Plain text is enough here: the checks are on
// instruction words, and BuildKit's parser would be a new dependency for that.
func parseDockerfile(t *testing.T, rel string) (syntax string, stages []stage) {
	t.Helper()
	var cur strings.Builder
	flush := func() {
		line := strings.TrimSpace(cur.String())
		cur.Reset()
		if line == "" {
			return
		}
		cmd, args, _ := strings.Cut(line, " ")
		in := instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)}
		if in.cmd == "FROM" {
			f := strings.Fields(in.args)
			st := stage{from: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				st.name = f[2]
			}
			stages = append(stages, st)
			return
		}
		if len(stages) == 0 {
			t.Fatalf("%s: %s before FROM", rel, in.cmd)
		}
		stages[len(stages)-1].instrs = append(stages[len(stages)-1].instrs, in)
	}
	for i, line := range strings.Split(readRepoFile(t, rel), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") {
			if i == 0 {
				syntax = trimmed
			}
			continue
		}
		if s, ok := strings.CutSuffix(trimmed, "\\"); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(trimmed)
		flush()
	}
	flush()
	return syntax, stages
}

// execForm decodes a JSON-array (exec form) argument; ok is false for shell form, which
// distroless cannot run (no /bin/sh).
func execForm(args string) (argv []string, ok bool) {
	return argv, json.Unmarshal([]byte(args), &argv) == nil && len(argv) > 0
}

func (s stage) all(cmd string) []instruction {
	var out []instruction
	for _, in := range s.instrs {
		if in.cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

func TestDockerfiles(t *testing.T) {
	goVersion := goMajorMinor(t)
	for _, prog := range []string{"gateway", "ticker"} {
		t.Run(prog, func(t *testing.T) {
			rel := "Dockerfile." + prog
			syntax, stages := parseDockerfile(t, rel)
			if syntax != "# syntax=docker/dockerfile:1" {
				t.Errorf("%s: first line %q, want # syntax=docker/dockerfile:1 (cache mounts need it)", rel, syntax)
			}
			if len(stages) < 2 {
				t.Fatalf("%s: %d stages, want a build stage and a final stage", rel, len(stages))
			}
			build, final := stages[0], stages[len(stages)-1]
			if want := "golang:" + goVersion; build.from != want && !strings.HasPrefix(build.from, want+"-") &&
				!strings.HasPrefix(build.from, want+".") {
				t.Errorf("%s: builder %q, want %s to match go.mod's go %s", rel, build.from, want, goVersion)
			}
			checkBuildStage(t, rel, prog, build)

			if !regexp.MustCompile(`^gcr\.io/distroless/static(-debian\d+)?:nonroot$`).MatchString(final.from) &&
				final.from != "scratch" {
				t.Errorf("%s: final image %q, want gcr.io/distroless/static-debian12:nonroot", rel, final.from)
			}
			copies := final.all("COPY")
			if want := "--from=" + build.name + " /out/" + prog + " /" + prog; build.name == "" ||
				!slices.ContainsFunc(copies, func(in instruction) bool { return in.args == want }) {
				t.Errorf("%s: final stage COPY %v, want COPY %s", rel, copies, want)
			}
			if users := final.all("USER"); len(users) == 0 || strings.HasPrefix(users[len(users)-1].args, "root") ||
				strings.HasPrefix(users[len(users)-1].args, "0") {
				t.Errorf("%s: final stage USER %v, want nonroot:nonroot", rel, users)
			}
			ep := final.all("ENTRYPOINT")
			if len(ep) != 1 {
				t.Fatalf("%s: %d ENTRYPOINTs, want 1", rel, len(ep))
			}
			if argv, ok := execForm(ep[0].args); !ok || !slices.Equal(argv, []string{"/" + prog}) {
				t.Errorf("%s: ENTRYPOINT %s, want exec form [\"/%s\"] so SIGTERM reaches the program", rel, ep[0].args, prog)
			}
			hc := final.all("HEALTHCHECK")
			if len(hc) != 1 {
				t.Fatalf("%s: %d HEALTHCHECKs, want 1", rel, len(hc))
			}
			_, cmd, _ := strings.Cut(hc[0].args, "CMD ")
			if argv, ok := execForm(strings.TrimSpace(cmd)); !ok || !slices.Equal(argv, []string{"/" + prog, "healthcheck"}) {
				t.Errorf("%s: HEALTHCHECK %s, want CMD [\"/%s\",\"healthcheck\"] (exec form: no shell)", rel, hc[0].args, prog)
			}
			if prog == "gateway" && !slices.ContainsFunc(final.all("EXPOSE"), func(in instruction) bool {
				return slices.Contains(strings.Fields(in.args), "8080")
			}) {
				t.Errorf("%s: no EXPOSE 8080", rel)
			}
		})
	}
}

// checkBuildStage checks the layer order that keeps module downloads cached, the cache mounts,
// and a static, trimmed build of ./prog.
func checkBuildStage(t *testing.T, rel, prog string, build stage) {
	t.Helper()
	step := func(match func(instruction) bool) int { return slices.IndexFunc(build.instrs, match) }
	copyMod := step(func(in instruction) bool {
		f := strings.Fields(in.args)
		return in.cmd == "COPY" && slices.Contains(f, "go.mod") && slices.Contains(f, "go.sum")
	})
	download := step(func(in instruction) bool { return in.cmd == "RUN" && strings.Contains(in.args, "go mod download") })
	copyAll := step(func(in instruction) bool { return in.cmd == "COPY" && strings.HasPrefix(in.args, ". ") })
	buildStep := step(func(in instruction) bool { return in.cmd == "RUN" && strings.Contains(in.args, "go build") })
	if copyMod < 0 || download < copyMod || copyAll < download || buildStep < copyAll {
		t.Errorf("%s: steps at %d (COPY go.mod go.sum) %d (go mod download) %d (COPY . .) %d (go build), want that order",
			rel, copyMod, download, copyAll, buildStep)
	}
	if buildStep < 0 {
		return
	}
	args := build.instrs[buildStep].args
	for _, want := range []string{
		"CGO_ENABLED=0", "-trimpath", `-ldflags="-s -w"`, "-o /out/" + prog + " ./" + prog,
		"--mount=type=cache,target=/go/pkg/mod", "--mount=type=cache,target=/root/.cache/go-build",
	} {
		if !strings.Contains(args, want) {
			t.Errorf("%s: go build step lacks %s: RUN %s", rel, want, args)
		}
	}
	if download >= 0 && !strings.Contains(build.instrs[download].args, "--mount=type=cache,target=/go/pkg/mod") {
		t.Errorf("%s: go mod download without a cache mount for /go/pkg/mod", rel)
	}
}

// TestDockerignore checks that the build context keeps what `go build` needs and drops the
// rest. It implements the subset of .dockerignore matching the file uses (globs anchored at the
// root, ** for any depth, ! to re-include).
func TestDockerignore(t *testing.T) {
	var patterns []string
	for _, line := range strings.Split(readRepoFile(t, ".dockerignore"), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			patterns = append(patterns, line)
		}
	}
	ignored := func(p string) bool {
		out := false
		for _, pat := range patterns {
			neg := strings.HasPrefix(pat, "!")
			pat = strings.Trim(strings.TrimPrefix(pat, "!"), "/")
			if matchIgnore(pat, p) {
				out = !neg
			}
		}
		return out
	}
	for _, keep := range []string{"go.mod", "go.sum", "gateway/main.go", "ticker/main.go",
		"pkg/gateway/server.go", "pkg/protocol/protocol.go",
		"pkg/gateway/web/index.html", "pkg/gateway/web/app.js"} { // the last two are embedded
		if ignored(keep) {
			t.Errorf(".dockerignore excludes %s, which the build needs", keep)
		}
	}
	for _, drop := range []string{".git/HEAD", "bin/gateway", "README.md", "docs/x.md", "pkg/fib/fib.test", "cpu.prof"} {
		if !ignored(drop) {
			t.Errorf(".dockerignore keeps %s in the build context", drop)
		}
	}
}

// matchIgnore reports whether pattern matches p or one of its parent directories.
func matchIgnore(pattern, p string) bool {
	for q := p; q != "." && q != "/"; q = path.Dir(q) {
		if rest, ok := strings.CutPrefix(pattern, "**/"); ok {
			for s := q; ; {
				if m, _ := path.Match(rest, s); m {
					return true
				}
				_, after, found := strings.Cut(s, "/")
				if !found {
					break
				}
				s = after
			}
		} else if m, _ := path.Match(pattern, q); m {
			return true
		}
	}
	return false
}

// TestReadmeComposeCommand checks that the README tells people the command the stack is tested
// for.
func TestReadmeComposeCommand(t *testing.T) {
	if want := "docker compose up --build --scale gateway=3"; !strings.Contains(readRepoFile(t, "README.md"), want) {
		t.Errorf("README.md does not mention %q", want)
	}
}

// TestHealthcheckSubcommand runs the images' HEALTHCHECK command, `<program> healthcheck`,
// against a live and a dead dependency: it must exit 0 and non-zero respectively, or Docker
// would report a healthy container as unhealthy (or the reverse) and compose's depends_on and
// restarts would act on it.
func TestHealthcheckSubcommand(t *testing.T) {
	run := func(t *testing.T, bin string, env ...string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, "healthcheck")
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Logf("%s healthcheck %v: %v\n%s", filepath.Base(bin), env, err, out)
		}
		return err
	}
	t.Run("gateway", func(t *testing.T) {
		t.Parallel()
		bin := buildProgram(t, "gateway")
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/healthz" {
				http.NotFound(w, r)
				return
			}
			io.WriteString(w, "ok")
		}))
		_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
		if err := run(t, bin, "GATEWAY_ADDR=:"+port); err != nil {
			t.Errorf("gateway healthcheck with /healthz answering 200: %v, want exit 0", err)
		}
		srv.Close()
		if run(t, bin, "GATEWAY_ADDR=:"+port) == nil {
			t.Error("gateway healthcheck with nothing listening: exit 0, want non-zero")
		}
	})
	t.Run("ticker", func(t *testing.T) {
		t.Parallel()
		bin := buildProgram(t, "ticker")
		rs := testkit.StartRedis(t)
		if err := run(t, bin, "REDIS_URL=redis://"+rs.Addr()+"/0"); err != nil {
			t.Errorf("ticker healthcheck with Redis up: %v, want exit 0", err)
		}
		dead := fmt.Sprintf("REDIS_URL=redis://127.0.0.1:%d/0", testkit.FreePort(t))
		if run(t, bin, dead) == nil {
			t.Error("ticker healthcheck with no Redis: exit 0, want non-zero")
		}
	})
}
