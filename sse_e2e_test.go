package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
)

// TestOtherSubscriptionTransports: SSE and the legacy graphql-ws subprotocol, through the whole
// binary (the graph package tests them at handler level).
func TestOtherSubscriptionTransports(t *testing.T) {
	s := startServe(t)
	waitSubscribers := func(t *testing.T, want float64) {
		t.Helper()
		eventually(t, 10*time.Second, "likeCount subscribers registered", func() error {
			if n := s.metrics()[`postgate_graphql_subscribers{field="likeCount"}`]; n < want {
				return fmt.Errorf("%v likeCount subscribers", n)
			}
			return nil
		})
	}
	like := func(t *testing.T, id string) {
		t.Helper()
		r := s.do(s.token(uniqueName("fan")), `mutation($id: ID!) { likePost(id: $id) { id } }`, map[string]any{"id": id})
		if len(r.Errors) > 0 {
			t.Fatalf("like: %s", r.raw)
		}
	}

	t.Run("server-sent events", func(t *testing.T) {
		s := s.in(t)
		ctx := testDeadline(t, 30*time.Second)
		// Subscribing right after creating, before the projector has caught up, must work too.
		p := s.createPost(s.token(uniqueName("sse")), "over SSE")
		body, _ := json.Marshal(map[string]any{"query": `subscription($id: ID!) { likeCount(postId: $id) { likes version } }`,
			"variables": map[string]any{"id": p.ID}})
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.url+"/graphql", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "text/event-stream")
		before := s.metrics()[`postgate_graphql_subscribers{field="likeCount"}`]
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
			t.Fatalf("content type %q", ct)
		}
		waitSubscribers(t, before+1)
		like(t, p.ID)
		like(t, p.ID)
		lines := bufio.NewScanner(resp.Body)
		var counts []int
		for len(counts) < 2 && lines.Scan() {
			data, ok := strings.CutPrefix(lines.Text(), "data: ")
			if !ok {
				continue
			}
			var msg struct {
				Data struct{ LikeCount struct{ Likes, Version int } }
			}
			if err := json.Unmarshal([]byte(data), &msg); err != nil {
				t.Fatalf("event %q: %v", data, err)
			}
			counts = append(counts, msg.Data.LikeCount.Likes)
		}
		if fmt.Sprint(counts) != "[1 2]" {
			t.Fatalf("SSE like counts %v, want [1 2] (scan error %v)", counts, lines.Err())
		}
	})

	t.Run("legacy graphql-ws subprotocol", func(t *testing.T) {
		s := s.in(t)
		ctx := testDeadline(t, 30*time.Second)
		p := s.createPost(s.token(uniqueName("legacy")), "over graphql-ws")
		c, _, err := websocket.Dial(ctx, "ws://"+s.addr+"/graphql", &websocket.DialOptions{Subprotocols: []string{"graphql-ws"}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		if c.Subprotocol() != "graphql-ws" {
			t.Fatalf("negotiated %q", c.Subprotocol())
		}
		type msg struct {
			ID      string          `json:"id,omitempty"`
			Type    string          `json:"type"`
			Payload json.RawMessage `json:"payload,omitempty"`
		}
		if err := wsjson.Write(ctx, c, msg{Type: "connection_init", Payload: json.RawMessage(`{}`)}); err != nil {
			t.Fatal(err)
		}
		read := func() msg {
			for {
				var m msg
				if err := wsjson.Read(ctx, c, &m); err != nil {
					t.Fatalf("read: %v", err)
				}
				if m.Type != "ka" { // the legacy protocol's keepalive
					return m
				}
			}
		}
		if m := read(); m.Type != "connection_ack" {
			t.Fatalf("got %+v, want connection_ack", m)
		}
		start, _ := json.Marshal(map[string]any{"query": `subscription($id: ID!) { likeCount(postId: $id) { likes } }`,
			"variables": map[string]any{"id": p.ID}})
		before := s.metrics()[`postgate_graphql_subscribers{field="likeCount"}`]
		if err := wsjson.Write(ctx, c, msg{ID: "1", Type: "start", Payload: start}); err != nil {
			t.Fatal(err)
		}
		waitSubscribers(t, before+1)
		like(t, p.ID)
		m := read()
		if m.Type != "data" || m.ID != "1" || !strings.Contains(string(m.Payload), `"likes":1`) {
			t.Fatalf("got %s %s %s, want data with one like", m.Type, m.ID, m.Payload)
		}
		if err := wsjson.Write(ctx, c, msg{ID: "1", Type: "stop"}); err != nil {
			t.Fatal(err)
		}
		if m := read(); m.Type != "complete" || m.ID != "1" {
			t.Fatalf("after stop got %+v, want complete", m)
		}
		c.Close(websocket.StatusNormalClosure, "")
	})
}

// TestRequestLimitsThroughTheBinary: the body and token limits that serve configures.
func TestRequestLimitsThroughTheBinary(t *testing.T) {
	s := startServe(t, "--max-body", "4096")
	big := `{"query": "{ __typename }", "variables": {"pad": "` + strings.Repeat("x", 5000) + `"}}`
	resp, err := http.Post(s.url+"/graphql", "application/json", strings.NewReader(big))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(body), `"code":"BAD_REQUEST"`) {
		t.Fatalf("oversized body: %d %s", resp.StatusCode, body)
	}
	// Over the parser's token limit (15,000 by default), with a body under the default size limit:
	// refused before it is executed.
	d := startServe(t)
	many := "{ " + strings.Repeat("a: __typename ", 8000) + "}"
	r := d.do("", many, nil)
	if r.status != http.StatusOK && r.status != http.StatusUnprocessableEntity || r.code() != "GRAPHQL_PARSE_FAILED" {
		t.Fatalf("query over the token limit: %d %.300s", r.status, r.raw)
	}
}
