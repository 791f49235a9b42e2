package main

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/postgate/postgate/internal/disktest"
)

// TestReadyzTellsWhenTheDiskIsFull: readiness means the event store takes a write. With the data
// dir on a small real file system, filling it turns /readyz to 503 naming the reason, mutations
// fail without telling why, and freeing the space brings both back without a restart.
func TestReadyzTellsWhenTheDiskIsFull(t *testing.T) {
	dir := disktest.Mount(t, 64<<20) // unmounted after serve has stopped
	s := startServe(t, "--data", dir)
	token := s.token(uniqueName("filler"))
	const createPost = `mutation($m: String!) { createPost(message: $m) { id } }`

	eventually(t, 30*time.Second, "readyz 200 on a writable disk", func() error { return s.readyz(http.StatusOK, "ready") })
	s.createPost(token, "written before the disk filled up")

	free := disktest.Fill(t, dir)
	eventually(t, 5*time.Second, "readyz 503 on a full disk", func() error {
		return s.readyz(http.StatusServiceUnavailable, "not ready: event store: cannot write: disk full")
	})
	// An append may still fit into log pages the store already has; one that needs new ones fails.
	eventually(t, 10*time.Second, "a createPost fails on the full disk", func() error {
		r := s.do(token, createPost, map[string]any{"m": "written on a full disk"})
		if r.code() != "INTERNAL_SERVER_ERROR" {
			return fmt.Errorf("%w: %s", errNotYet, r.raw)
		}
		for _, leak := range []string{dir, "events.db", "disk", "full", "sqlite", "(13)"} {
			if strings.Contains(strings.ToLower(r.raw), strings.ToLower(leak)) {
				t.Errorf("the error of a failed createPost tells %q: %s", leak, r.raw)
			}
		}
		return nil
	})

	free()
	eventually(t, 5*time.Second, "readyz 200 once the space is free", func() error { return s.readyz(http.StatusOK, "ready") })
	eventually(t, 5*time.Second, "createPost once the space is free", func() error {
		if r := s.do(token, createPost, map[string]any{"m": "written after the space came back"}); len(r.Errors) > 0 {
			return fmt.Errorf("%w: %s", errNotYet, r.raw)
		}
		return nil
	})
	// Dozens of probes saw the change; the log tells it once each way.
	logs := s.logs.tail(1 << 30)
	if n := strings.Count(logs, `msg="not ready"`); n != 1 {
		t.Errorf("%d warnings \"not ready\" in the log, want 1 (once per change of state)", n)
	}
	if n := strings.Count(logs, `msg="ready again"`); n != 1 {
		t.Errorf("%d lines \"ready again\" in the log, want 1", n)
	}
}

// readyz returns nil when GET /readyz answers status with exactly body (plus a line break).
func (s *testServer) readyz(status int, body string) error {
	resp, err := e2eHTTP.Get(s.url + "/readyz")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != status || strings.TrimSpace(string(b)) != body {
		return fmt.Errorf("%w: %d %q, want %d %q", errNotYet, resp.StatusCode, b, status, body)
	}
	return nil
}
