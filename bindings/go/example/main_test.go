package main

import (
	"strings"
	"testing"
)

// The example's own check: 100 echo programs, every output and status.
func TestSpawnEchoes(t *testing.T) {
	var log strings.Builder
	if err := spawnEchoes(100, &log); err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	t.Log(strings.TrimSpace(log.String()))
}
