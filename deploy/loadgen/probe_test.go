package loadgen

import "testing"

func TestShortErrGroupsPerSocketFailures(t *testing.T) {
	a := shortErr(`failed to WebSocket dial: Get "http://127.0.0.1:5/ws?user=lt0-1": dial tcp 127.0.0.2:40000->127.0.0.1:5: connect: connection refused`)
	b := shortErr(`failed to WebSocket dial: Get "http://127.0.0.1:5/ws?user=lt0-999": dial tcp 127.0.0.3:41234->127.0.0.1:5: connect: connection refused`)
	if a != b {
		t.Fatalf("per-socket details not stripped:\n%s\n%s", a, b)
	}
}
