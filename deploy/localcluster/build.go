package localcluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Programs are the binaries BuildBinaries builds and Start runs from Options.BinDir.
var Programs = []string{"gateway", "ticker", "client"}

// BuildBinaries builds the gateway, ticker and client programs into outDir with
// `go build -o outDir/ ./gateway ./ticker ./client`, run from the repository root (found by
// walking up from the working directory to go.mod).
func BuildBinaries(ctx context.Context, outDir string) error {
	root, err := RepoRoot()
	if err != nil {
		return err
	}
	abs, err := filepath.Abs(outDir)
	if err != nil {
		return fmt.Errorf("localcluster: build: %w", err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return fmt.Errorf("localcluster: build: %w", err)
	}
	args := []string{"build", "-o", abs + string(filepath.Separator)}
	for _, p := range Programs {
		args = append(args, "./"+p)
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("localcluster: go build in %s: %w\n%s", root, err, out)
	}
	return nil
}

// RepoRoot returns the nearest directory at or above the working directory holding go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("localcluster: find repo root: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("localcluster: find repo root: no go.mod above the working directory")
		}
		dir = parent
	}
}
