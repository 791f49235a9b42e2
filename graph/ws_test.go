package graph

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
)

// wsClient is a minimal GraphQL-over-websocket client speaking graphql-transport-ws, or the legacy
// graphql-ws protocol when legacy is set.
type wsClient struct {
	tb     testing.TB
	conn   *websocket.Conn
	legacy bool
}

type wsMessage struct {
	ID      string          `json:"id,omitempty"`
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

// dialRaw opens a websocket without sending anything.
func (e *env) dialRaw(ctx context.Context, legacy bool) (*wsClient, error) {
	e.tb.Helper()
	proto := "graphql-transport-ws"
	if legacy {
		proto = "graphql-ws"
	}
	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(e.srv.URL, "http")+"/graphql", &websocket.DialOptions{Subprotocols: []string{proto}})
	if err != nil {
		return nil, err
	}
	conn.SetReadLimit(1 << 20)
	e.tb.Cleanup(func() { conn.CloseNow() })
	return &wsClient{tb: e.tb, conn: conn, legacy: legacy}, nil
}

func (e *env) dialWS(ctx context.Context, token string, legacy bool) (*wsClient, error) {
	e.tb.Helper()
	c, err := e.dialRaw(ctx, legacy)
	if err != nil {
		return nil, err
	}
	payload := map[string]any{}
	if token != "" {
		payload["Authorization"] = "Bearer " + token
	}
	if err := wsjson.Write(ctx, c.conn, map[string]any{"type": "connection_init", "payload": payload}); err != nil {
		return nil, err
	}
	for {
		m, err := c.read(ctx)
		if err != nil {
			return nil, err
		}
		switch m.Type {
		case "connection_ack":
			return c, nil
		case "ka", "ping":
			continue
		case "connection_error":
			// The legacy protocol says why before closing; the close status follows.
			continue
		default:
			return nil, errors.New("unexpected " + m.Type)
		}
	}
}

func (c *wsClient) read(ctx context.Context) (wsMessage, error) {
	var m wsMessage
	err := wsjson.Read(ctx, c.conn, &m)
	return m, err
}

// send writes one raw text message.
func (c *wsClient) send(ctx context.Context, raw string) {
	c.tb.Helper()
	if err := c.conn.Write(ctx, websocket.MessageText, []byte(raw)); err != nil {
		c.tb.Fatalf("send %s: %v", raw, err)
	}
}

// closeStatus reads until the server closes the connection and returns the messages read before
// (keep-alives excepted) and the close status (-1 when the connection ended without one).
func (c *wsClient) closeStatus(ctx context.Context) ([]wsMessage, websocket.StatusCode) {
	c.tb.Helper()
	var msgs []wsMessage
	for {
		m, err := c.read(ctx)
		if err != nil {
			if ctx.Err() != nil {
				c.tb.Fatalf("the server did not close the websocket: %v", err)
			}
			return msgs, websocket.CloseStatus(err)
		}
		if m.Type != "ka" && m.Type != "ping" {
			msgs = append(msgs, m)
		}
	}
}

func (c *wsClient) subscribe(ctx context.Context, id, query string, vars map[string]any) {
	c.tb.Helper()
	typ := "subscribe"
	if c.legacy {
		typ = "start"
	}
	payload, _ := json.Marshal(map[string]any{"query": query, "variables": vars})
	if err := wsjson.Write(ctx, c.conn, wsMessage{ID: id, Type: typ, Payload: payload}); err != nil {
		c.tb.Fatalf("subscribe: %v", err)
	}
}

// next returns the next data or error message of any subscription, skipping keep-alives; a
// "complete" comes back as a message of that type.
func (c *wsClient) next(ctx context.Context) wsMessage {
	c.tb.Helper()
	for {
		m, err := c.read(ctx)
		if err != nil {
			c.tb.Fatalf("read websocket: %v", err)
		}
		switch m.Type {
		case "ka", "ping", "pong":
			if m.Type == "ping" {
				wsjson.Write(ctx, c.conn, map[string]any{"type": "pong"})
			}
			continue
		}
		return m
	}
}

func (c *wsClient) nextData(ctx context.Context, v any) {
	c.tb.Helper()
	m := c.next(ctx)
	if m.Type != "next" && m.Type != "data" {
		c.tb.Fatalf("message %s %s, want data", m.Type, m.Payload)
	}
	var r gqlResponse
	if err := json.Unmarshal(m.Payload, &r); err != nil || len(r.Errors) > 0 {
		c.tb.Fatalf("payload %s: %v", m.Payload, err)
	}
	if err := json.Unmarshal(r.Data, v); err != nil {
		c.tb.Fatalf("data %s: %v", r.Data, err)
	}
}

// subscriberCount is the number of subscriptions the Hub holds.
func (h *Hub) subscriberCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := len(h.created)
	for _, s := range h.likes {
		n += len(s)
	}
	for _, s := range h.updates {
		n += len(s)
	}
	return n
}

func testCtx(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

// waitSubscribers waits until the Hub holds n subscriptions in total, so that changes published
// afterwards are certain to reach them.
func (e *env) waitSubscribers(n int) {
	e.tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := e.hub.subscriberCount()
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			e.tb.Fatalf("%d subscribers after 10s, want %d", got, n)
		}
		time.Sleep(2 * time.Millisecond) // polling a condition, bounded by the deadline
	}
}

// waitSubscribersBelow waits until the Hub holds fewer than n subscriptions.
func (e *env) waitSubscribersBelow(n int) {
	e.tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := e.hub.subscriberCount()
		if got < n {
			return
		}
		if time.Now().After(deadline) {
			e.tb.Fatalf("%d subscribers after 10s, want fewer than %d", got, n)
		}
		time.Sleep(2 * time.Millisecond) // polling a condition, bounded by the deadline
	}
}

func TestLikeCountSubscriptionReceivesEveryCountInOrder(t *testing.T) {
	for _, legacy := range []bool{false, true} {
		name := "graphql-transport-ws"
		if legacy {
			name = "graphql-ws"
		}
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			ctx := testCtx(t)
			p := e.createPost("alice", "hot")
			e.project()
			c, err := e.dialWS(ctx, "", legacy)
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			c.subscribe(ctx, "1", `subscription($id: ID!) { likeCount(postId: $id) { postId likes version } }`, map[string]any{"id": p.ID})
			e.waitSubscribers(1)

			users := []string{"u1", "u2", "u3", "u4", "u5"}
			for _, u := range users {
				e.mustData(e.do(e.token(u), `mutation($id: ID!) { likePost(id: $id) { id } }`, map[string]any{"id": p.ID}), new(any))
				e.project()
			}
			e.mustData(e.do(e.token("u1"), `mutation($id: ID!) { unlikePost(id: $id) { id } }`, map[string]any{"id": p.ID}), new(any))
			e.project()
			want := []int64{1, 2, 3, 4, 5, 4}
			var last int64
			for i, w := range want {
				var d struct{ LikeCount LikeCount }
				c.nextData(ctx, &d)
				if d.LikeCount.Likes != w || d.LikeCount.PostID != p.ID || d.LikeCount.Version <= last {
					t.Fatalf("message %d = %+v, want likes %d after version %d", i, d.LikeCount, w, last)
				}
				last = d.LikeCount.Version
			}
		})
	}
}

func TestPostUpdatedEndsAfterDeletion(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	p := e.createPost("alice", "v1")
	e.project()
	c, err := e.dialWS(ctx, e.token("bob"), false)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	c.subscribe(ctx, "u", `subscription($id: ID!) { postUpdated(id: $id) { message likes likedByMe comments { edges { node { text } } } } }`, map[string]any{"id": p.ID})
	e.waitSubscribers(1)
	alice := e.token("alice")
	e.mustData(e.do(alice, `mutation($id: ID!) { editPost(id: $id, message: "v2") { id } }`, map[string]any{"id": p.ID}), new(any))
	e.project()
	var d struct{ PostUpdated postJSON }
	c.nextData(ctx, &d)
	if d.PostUpdated.Message != "v2" {
		t.Fatalf("first update = %+v", d.PostUpdated)
	}
	e.mustData(e.do(e.token("bob"), `mutation($id: ID!) { likePost(id: $id) { id } }`, map[string]any{"id": p.ID}), new(any))
	e.project()
	c.nextData(ctx, &d)
	if d.PostUpdated.Likes != 1 || !d.PostUpdated.LikedByMe {
		t.Fatalf("update after like = %+v, want 1 like by bob", d.PostUpdated)
	}
	e.mustData(e.do(alice, `mutation($id: ID!) { addComment(postId: $id, text: "c1") { id } }`, map[string]any{"id": p.ID}), new(any))
	e.project()
	c.nextData(ctx, &d)
	if cs := d.PostUpdated.Comments.nodes(); len(cs) != 1 || cs[0].Text != "c1" {
		t.Fatalf("update after comment = %+v", d.PostUpdated)
	}
	e.mustData(e.do(alice, `mutation($id: ID!) { deletePost(id: $id) }`, map[string]any{"id": p.ID}), new(any))
	e.project()
	if m := c.next(ctx); m.Type != "complete" || m.ID != "u" {
		t.Fatalf("after deletion got %s %s, want complete", m.Type, m.Payload)
	}
}

func TestSubscriptionToUnknownPostIsNotFound(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	c, err := e.dialWS(ctx, "", false)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	c.subscribe(ctx, "x", `subscription { likeCount(postId: "nope") { likes } }`, nil)
	m := c.next(ctx)
	if m.Type != "error" && m.Type != "next" || !strings.Contains(string(m.Payload), CodeNotFound) {
		t.Fatalf("got %s %s, want a NOT_FOUND error", m.Type, m.Payload)
	}
}

func TestPostCreatedFiltersByAuthor(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	c, err := e.dialWS(ctx, "", false)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	c.subscribe(ctx, "all", `subscription { postCreated { author message } }`, nil)
	c.subscribe(ctx, "bob", `subscription { postCreated(author: "bob") { author message } }`, nil)
	e.waitSubscribers(2)
	e.createPost("alice", "from alice")
	e.createPost("bob", "from bob")
	e.project()
	got := map[string][]string{}
	for range 3 {
		m := c.next(ctx)
		var r struct {
			Data struct{ PostCreated postJSON }
		}
		if err := json.Unmarshal(m.Payload, &r); err != nil {
			t.Fatalf("payload %s: %v", m.Payload, err)
		}
		got[m.ID] = append(got[m.ID], r.Data.PostCreated.Message)
	}
	if strings.Join(got["all"], ",") != "from alice,from bob" || strings.Join(got["bob"], ",") != "from bob" {
		t.Fatalf("deliveries = %v", got)
	}
}

func TestWebsocketBadTokenClosesWith4403(t *testing.T) {
	e := newEnv(t)
	for _, legacy := range []bool{false, true} {
		ctx := testCtx(t)
		forged, _ := IssueToken([]byte("another key"), "alice", time.Hour)
		_, err := e.dialWS(ctx, forged, legacy)
		if got := websocket.CloseStatus(err); got != 4403 {
			t.Errorf("legacy=%v: close status %d (err %v), want 4403", legacy, got, err)
		}
	}
}

func TestWebsocketOriginCheck(t *testing.T) {
	e := newEnv(t, func(c *ServerConfig, _ *[]HubOption) { c.AllowedOrigins = []string{"https://app.example.com"} })
	ctx := testCtx(t)
	url := "ws" + strings.TrimPrefix(e.srv.URL, "http") + "/graphql"
	for origin, ok := range map[string]bool{"https://app.example.com": true, "https://evil.example.com": false} {
		h := map[string][]string{"Origin": {origin}}
		conn, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: []string{"graphql-transport-ws"}, HTTPHeader: h})
		if (err == nil) != ok {
			t.Errorf("origin %s: err %v, want allowed=%v", origin, err, ok)
		}
		if conn != nil {
			conn.CloseNow()
		}
	}
}

// TestAWebsocketOutlivingItsTokenIsClosedWith4403: a socket is authenticated once; when its token
// expires (with verification's leeway) the server closes it with 4403, ending its subscriptions.
func TestAWebsocketOutlivingItsTokenIsClosedWith4403(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tok, err := IssueToken(testSecret, "mallory", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c, err := e.dialWS(ctx, tok, false)
	if err != nil {
		t.Fatal(err)
	}
	c.subscribe(ctx, "1", `mutation { createPost(message: "as mallory") { id } }`, nil)
	var d struct{ CreatePost struct{ ID string } }
	c.nextData(ctx, &d) // while the token is valid
	c.subscribe(ctx, "created", `subscription { postCreated { id } }`, nil)
	e.waitSubscribers(1)
	start := time.Now()
	msgs, status := c.closeStatus(ctx)
	if status != closeForbidden {
		t.Fatalf("close status %d after %s, want 4403", status, time.Since(start))
	}
	for _, m := range msgs {
		if m.ID == "created" {
			t.Errorf("the subscription got %s %s before the close, want nothing", m.Type, m.Payload)
		}
	}
	e.waitSubscribersBelow(1)
}
