package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/postgate/postgate/write/mongo/mongotest"
)

// TestMain stops the embedded FerretDB that mongotest may have started. FerretDB reaches only this
// test binary, never the postgate binary (layout_test.go checks that).
func TestMain(m *testing.M) { os.Exit(mongotest.Main(m)) }

// TestServeOnMongoDB runs the real serve with its event store in MongoDB (FerretDB here, a real
// MongoDB when POSTGATE_TEST_MONGO_URI is set): the configured path, not the embedded one.
func TestServeOnMongoDB(t *testing.T) {
	s := startServe(t, "--mongo-uri", mongotest.URI(t), "--mongo-db", mongotest.Database(t),
		"--mongo-majority="+strconv.FormatBool(mongotest.Majority()))
	author := s.token(uniqueName("mongo-author"))
	p := s.createPost(author, "stored in MongoDB")
	for i := range 5 {
		r := s.do(s.token(uniqueName(fmt.Sprintf("mongo-fan%d", i))), `mutation($id: ID!) { likePost(id: $id) { likes } }`, map[string]any{"id": p.ID})
		if len(r.Errors) > 0 {
			t.Fatalf("like: %s", r.raw)
		}
	}
	r := s.do(author, `mutation($id: ID!) { addComment(postId: $id, text: "first") { id } }`, map[string]any{"id": p.ID})
	if len(r.Errors) > 0 {
		t.Fatalf("comment: %s", r.raw)
	}
	s.waitLikes(p.ID, 5)
	if got := s.readPost("", p.ID, 2); got == nil || got.Version != 2 {
		t.Fatalf("post after a comment: %+v, want version 2", got)
	}
	if _, err := os.Stat(filepath.Join(s.data, "events.db")); err == nil {
		t.Error("serve configured with MongoDB also made an embedded event store")
	}
	eventually(t, 30*time.Second, "postgate verify against MongoDB exits 0", func() error {
		out, errOut, code := s.command("verify")
		if code != 0 || !strings.Contains(out, "read model equals") {
			return fmt.Errorf("exit %d\n%s\n%s", code, out, errOut)
		}
		return nil
	})
}
