package deploytest

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/wsgw/wsgw/pkg/localcluster"
)

// repoRoot is the directory holding go.mod, so paths in the deployment files (all relative to
// the repository root) can be checked on disk.
func repoRoot(tb testing.TB) string {
	tb.Helper()
	root, err := localcluster.RepoRoot()
	if err != nil {
		tb.Fatal(err)
	}
	return root
}

// readRepoFile reads a file given relative to the repository root.
func readRepoFile(tb testing.TB, rel string) string {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(tb), filepath.FromSlash(rel)))
	if err != nil {
		tb.Fatalf("read %s: %v", rel, err)
	}
	return string(b)
}

var goLineRE = regexp.MustCompile(`(?m)^go\s+(\d+)\.(\d+)(?:\.\d+)?\s*$`)

// goMajorMinor returns go.mod's go line as "1.26": the Docker builder image must match it.
func goMajorMinor(tb testing.TB) string {
	tb.Helper()
	m := goLineRE.FindStringSubmatch(readRepoFile(tb, "go.mod"))
	if m == nil {
		tb.Fatal("go.mod: no `go X.Y` line")
	}
	return m[1] + "." + m[2]
}

var packageMainRE = regexp.MustCompile(`(?m)^package main\b`)

// mainPackage reports whether dir (relative to the root) holds a Go file of package main.
// The programs are being written alongside these tests; checks that need one skip until it exists.
func mainPackage(tb testing.TB, dir string) bool {
	tb.Helper()
	files, _ := filepath.Glob(filepath.Join(repoRoot(tb), dir, "*.go"))
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			tb.Fatalf("read %s: %v", f, err)
		}
		if packageMainRE.Match(b) {
			return true
		}
	}
	return false
}

// builds caches one build per program for the whole test binary: several tests run the same
// binary, and building it is most of their cost.
var builds struct {
	sync.Mutex
	dir  string
	done map[string]*buildResult
}

type buildResult struct {
	once sync.Once
	bin  string
	err  error
	out  []byte
}

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "deploytest-bin-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "deploytest: make build directory: %v\n", err)
		os.Exit(1)
	}
	builds.dir, builds.done = dir, map[string]*buildResult{}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// buildProgram builds ./name once and returns the binary's path, or skips the calling test when
// the package does not exist or does not build yet (other engineers are writing it).
func buildProgram(t *testing.T, name string) string {
	t.Helper()
	if !mainPackage(t, name) {
		t.Skipf("./%s has no package main yet; skipping the check that needs its binary", name)
	}
	builds.Lock()
	r := builds.done[name]
	if r == nil {
		r = &buildResult{bin: filepath.Join(builds.dir, name)}
		builds.done[name] = r
	}
	builds.Unlock()
	r.once.Do(func() {
		cmd := exec.Command("go", "build", "-o", r.bin, "./"+name)
		cmd.Dir = repoRoot(t)
		r.out, r.err = cmd.CombinedOutput()
	})
	if r.err != nil {
		t.Skipf("./%s does not build yet (%v); skipping the check that needs its binary:\n%s", name, r.err, r.out)
	}
	return r.bin
}
