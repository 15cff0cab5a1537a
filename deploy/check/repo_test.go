package check

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/util/yaml"

	"github.com/wsgw/wsgw/pkg/config"
	"github.com/wsgw/wsgw/pkg/metrics"
)

// repoRoot is the main module's root: this package lives in deploy/check.
func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the test's source file")
	}
	return filepath.Join(filepath.Dir(file), "..", "..")
}

func readRepoFile(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), filepath.FromSlash(rel)))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// readYAML decodes a YAML file of the repository into v, refusing unknown fields.
func readYAML(t *testing.T, rel string, v any) {
	t.Helper()
	if err := yaml.UnmarshalStrict(readRepoFile(t, rel), v); err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
}

// envVars lists the variables a program's configuration struct reads (its `env` tags, embedded
// structs included): what the program does with a variable it does not list is nothing.
func envVars(cfg any) []string {
	var out []string
	var walk func(reflect.Type)
	walk = func(t reflect.Type) {
		for i := range t.NumField() {
			f := t.Field(i)
			if f.Anonymous {
				walk(f.Type)
				continue
			}
			if name := f.Tag.Get("env"); name != "" {
				out = append(out, name)
			}
		}
	}
	walk(reflect.TypeOf(cfg))
	return out
}

// programVars is every variable each program reads.
func programVars() map[string][]string {
	return map[string][]string{
		"gateway": envVars(config.Gateway{}),
		"ticker":  envVars(config.Ticker{}),
	}
}

// runtimeVars are read by the Go runtime of every program, not by pkg/config.
var runtimeVars = []string{"GOMEMLIMIT", "GOGC", "GOMAXPROCS", "GODEBUG"}

// checkVar reports whether prog reads name; a variable still ahead of the programs is logged.
func checkVar(t *testing.T, where, prog, name string) {
	t.Helper()
	vars, ok := programVars()[prog]
	if !ok {
		t.Fatalf("%s: no program %q", where, prog)
	}
	switch {
	case slices.Contains(vars, name), slices.Contains(runtimeVars, name):
	default:
		t.Errorf("%s: %s sets %s, which pkg/config's %s settings do not read (a misspelt variable is ignored silently)", where, prog, name, prog)
	}
}

// metricNames gathers every metric name the programs export from their registry
// (pkg/metrics, shared by gateway and ticker), with the series names histograms and summaries
// add. A vector has no series until a label value is used, so each is given one first.
func metricNames(t *testing.T) map[string]bool {
	t.Helper()
	m := metrics.New()
	v := reflect.ValueOf(m).Elem()
	for i := range v.NumField() {
		f := v.Field(i)
		with := f.MethodByName("WithLabelValues")
		if !with.IsValid() {
			continue
		}
		if _, ok := f.Interface().(prometheus.Collector); !ok {
			continue
		}
		if !touch(with) {
			t.Fatalf("pkg/metrics: cannot give %s a label value", v.Type().Field(i).Name)
		}
	}
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range families {
		n := mf.GetName()
		names[n] = true
		switch mf.GetType().String() {
		case "HISTOGRAM", "GAUGE_HISTOGRAM":
			names[n+"_bucket"], names[n+"_sum"], names[n+"_count"] = true, true, true
		case "SUMMARY":
			names[n+"_sum"], names[n+"_count"] = true, true
		}
	}
	return names
}

// touch calls a vector's WithLabelValues with as many placeholder values as it has labels.
func touch(with reflect.Value) bool {
	for n := 1; n <= 8; n++ {
		args := make([]reflect.Value, n)
		for i := range args {
			args[i] = reflect.ValueOf("x")
		}
		if func() (ok bool) {
			defer func() {
				if recover() != nil {
					ok = false
				}
			}()
			with.Call(args)
			return true
		}() {
			return true
		}
	}
	return false
}

// foreign are metric names that come from other exporters, allowed by name: Prometheus's own
// `up`, and HAProxy's built-in exporter (the compose stack's lb).
var foreign = map[string]bool{
	"up":                                true,
	"haproxy_backend_active_servers":    true,
	"haproxy_frontend_current_sessions": true,
	"haproxy_server_current_sessions":   true,
}

// jsonString is a small helper for error messages.
func jsonString(v any) string {
	b, _ := json.Marshal(v)
	return strings.TrimSpace(string(b))
}
