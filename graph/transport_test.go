package graph

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

func TestQueryOverGET(t *testing.T) {
	e := newEnv(t)
	p := e.createPost("alice", "via get")
	e.project()
	q := url.Values{"query": {`query($id: ID!) { post(id: $id) { message } }`}, "variables": {`{"id": "` + p.ID + `"}`}}
	res, err := e.srv.Client().Get(e.srv.URL + "/graphql?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !strings.Contains(string(body), "via get") {
		t.Fatalf("GET response: %s", body)
	}
}

func TestSubscriptionOverSSE(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	p := e.createPost("alice", "sse")
	e.project()
	body, _ := json.Marshal(map[string]any{"query": `subscription($id: ID!) { likeCount(postId: $id) { likes } }`, "variables": map[string]any{"id": p.ID}})
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.srv.URL+"/graphql", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	res, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	e.waitSubscribers(1)
	e.mustData(e.do(e.token("bob"), `mutation($id: ID!) { likePost(id: $id) { id } }`, map[string]any{"id": p.ID}), new(any))
	e.project()
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		if line := sc.Text(); strings.HasPrefix(line, "data:") && strings.Contains(line, "likes") {
			if !strings.Contains(line, `"likes":1`) {
				t.Fatalf("event %s, want 1 like", line)
			}
			return
		}
	}
	t.Fatalf("stream ended without an event: %v", sc.Err())
}
