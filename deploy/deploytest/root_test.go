package deploytest

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"testing"

	"github.com/wsgw/wsgw/deploy/localcluster"
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

// buildProgram builds ./name once and returns the binary's path; a program that does not build
// fails the calling test.
func buildProgram(t *testing.T, name string) string {
	t.Helper()
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
		t.Fatalf("go build ./%s: %v\n%s", name, r.err, r.out)
	}
	return r.bin
}
