package check

import (
	"testing"

	"k8s.io/apimachinery/pkg/util/yaml"
)

// composeFile is the part of docker-compose.yml these checks compare with the other
// deployment files (deploy/deploytest checks the compose file itself, with compose-go).
type composeFile struct {
	Services map[string]struct {
		Image string `json:"image"`
		Build *struct {
			Dockerfile string `json:"dockerfile"`
		} `json:"build"`
		Environment map[string]string `json:"environment"`
		Expose      []string          `json:"expose"`
		Volumes     []string          `json:"volumes"`
	} `json:"services"`
}

func loadComposeFile(t *testing.T) composeFile {
	t.Helper()
	var c composeFile
	if err := yaml.Unmarshal(readRepoFile(t, "docker-compose.yml"), &c); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	return c
}
