package config

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/wsgw/wsgw/pkg/rediskey"
)

// TestReadmeTable checks README.md's configuration table against the struct tags, the one
// source of every variable and default: each variable of Gateway and Ticker has a row, each row
// names real variables of the programs it lists, and a default in backquotes is exactly the
// envDefault tag (variables without a tag say what they default to in words).
func TestReadmeTable(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(b), "\n## Configuration\n")
	if !ok {
		t.Fatal("README.md has no ## Configuration section")
	}
	table, _, _ = strings.Cut(table, "\n## ")

	type field struct {
		def      string
		hasDef   bool
		programs map[string]bool
	}
	fields := map[string]*field{}
	for program, v := range map[string]any{"gateway": Gateway{}, "ticker": Ticker{}} {
		walk(reflect.TypeOf(v), func(f reflect.StructField) {
			name := f.Tag.Get("env")
			fd := fields[name]
			if fd == nil {
				def, has := f.Tag.Lookup("envDefault")
				fd = &field{def: def, hasDef: has, programs: map[string]bool{}}
				fields[name] = fd
			}
			fd.programs[program] = true
		})
	}
	// Defaults that no tag holds because code computes them.
	computed := map[string]string{"REDIS_PREFIX": rediskey.DefaultPrefix}

	code := regexp.MustCompile("`([^`]*)`")
	seen := map[string]bool{}
	for _, line := range strings.Split(table, "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 5 || !strings.HasPrefix(strings.TrimSpace(cells[1]), "`") {
			continue
		}
		var names, defs []string
		for _, m := range code.FindAllStringSubmatch(cells[1], -1) {
			names = append(names, m[1])
		}
		for _, m := range code.FindAllStringSubmatch(cells[3], -1) {
			defs = append(defs, m[1])
		}
		programs := strings.TrimSpace(cells[2])
		for i, name := range names {
			fd, ok := fields[name]
			if !ok {
				t.Errorf("README.md lists %s, which pkg/config does not read", name)
				continue
			}
			seen[name] = true
			for _, p := range strings.Split(programs, ", ") {
				p = strings.TrimPrefix(p, "standalone ")
				if p != "all" && !fd.programs[p] {
					t.Errorf("README.md says %s is read by the %s; pkg/config does not have it there", name, p)
				}
			}
			switch {
			case fd.hasDef:
				if len(defs) != len(names) || defs[i] != fd.def {
					t.Errorf("README.md: %s defaults to %v; its envDefault tag says %q", name, defs, fd.def)
				}
			case computed[name] != "":
				if len(defs) != len(names) || defs[i] != computed[name] {
					t.Errorf("README.md: %s defaults to %v; the code says %q", name, defs, computed[name])
				}
			case len(defs) != 0:
				t.Errorf("README.md gives %s the default %v; it has none (no envDefault tag)", name, defs)
			}
		}
	}
	for name := range fields {
		if !seen[name] {
			t.Errorf("README.md's configuration table lacks %s", name)
		}
	}
}
