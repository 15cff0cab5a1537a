// Package check holds the deployment checks that need large dependencies (kustomize, the
// Kubernetes API types, the PromQL parser). It is its own module so the main go.mod stays
// free of them; CI runs it with `(cd deploy/check && go vet ./... && go test ./...)`.
package check
