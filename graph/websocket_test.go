package graph

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestWebsocketCloseCodes pins graphql-transport-ws's close code for each protocol violation.
func TestWebsocketCloseCodes(t *testing.T) {
	e := newEnv(t, func(c *ServerConfig, _ *[]HubOption) { c.WebsocketInitTimeout = 200 * time.Millisecond })
	tests := []struct {
		name string
		init bool     // send connection_init and wait for the ack first
		send []string // then send these
		want websocket.StatusCode
	}{
		{"a connection_init with a string payload is malformed", false, []string{`{"type":"connection_init","payload":"x"}`}, closeBadRequest},
		{"a connection_init with an array payload is malformed", false, []string{`{"type":"connection_init","payload":[1,2]}`}, closeBadRequest},
		{"a connection_init with a number payload is malformed", false, []string{`{"type":"connection_init","payload":7}`}, closeBadRequest},
		{"invalid JSON is malformed", false, []string{`{"type":`}, closeBadRequest},
		{"a message that is not an object is malformed", false, []string{`"x"`}, closeBadRequest},
		{"an unknown message type is malformed", true, []string{`{"type":"hello"}`}, closeBadRequest},
		{"a server message from the client is malformed", true, []string{`{"type":"next","id":"1","payload":{}}`}, closeBadRequest},
		{"a subscribe without an id is malformed", true, []string{`{"type":"subscribe","payload":{"query":"subscription { postCreated { id } }"}}`}, closeBadRequest},
		{"a subscribe without a payload is malformed", true, []string{`{"type":"subscribe","id":"1"}`}, closeBadRequest},
		{"a subscribe whose query is not a string is malformed", true, []string{`{"type":"subscribe","id":"1","payload":{"query":1}}`}, closeBadRequest},
		{"a subscribe before connection_init is unauthorized", false, []string{`{"type":"subscribe","id":"1","payload":{"query":"subscription { postCreated { id } }"}}`}, closeUnauthorized},
		{"no connection_init in time", false, nil, closeInitTimeout},
		{"a second connection_init", true, []string{`{"type":"connection_init"}`}, closeTooManyInits},
		{"a subscription id in use", true, []string{
			`{"type":"subscribe","id":"a","payload":{"query":"subscription { postCreated { id } }"}}`,
			`{"type":"subscribe","id":"a","payload":{"query":"subscription { postCreated { id } }"}}`,
		}, closeSubscriberInUse},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			var c *wsClient
			var err error
			if tt.init {
				c, err = e.dialWS(ctx, "", false)
			} else {
				c, err = e.dialRaw(ctx, false)
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range tt.send {
				c.send(ctx, m)
			}
			msgs, status := c.closeStatus(ctx)
			if status != tt.want {
				t.Fatalf("close status %d after %v, want %d", status, msgs, tt.want)
			}
		})
	}
}

func TestWebsocketDuplicateIDNamesTheID(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	c, err := e.dialWS(ctx, "", false)
	if err != nil {
		t.Fatal(err)
	}
	c.subscribe(ctx, "dup", `subscription { postCreated { id } }`, nil)
	c.subscribe(ctx, "dup", `subscription { postCreated { id } }`, nil)
	_, err = c.read(ctx)
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != closeSubscriberInUse || ce.Reason != "Subscriber for dup already exists" {
		t.Fatalf("read: %v, want 4409 naming the id", err)
	}
	// The first subscription ended with its socket: it is not left behind, unstoppable.
	e.waitSubscribersBelow(1)
}

// TestWebsocketIDsAreFreeOnceTheirOperationEnds: after the client's complete, after a
// pre-execution error and after the server's complete, the same id subscribes again.
func TestWebsocketIDsAreFreeOnceTheirOperationEnds(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	p := e.createPost("alice", "reuse")
	e.project()
	c, err := e.dialWS(ctx, "", false)
	if err != nil {
		t.Fatal(err)
	}
	const likes = `subscription($id: ID!) { likeCount(postId: $id) { likes } }`
	vars := map[string]any{"id": p.ID}

	c.subscribe(ctx, "x", likes, vars)
	e.waitSubscribers(1)
	c.send(ctx, `{"type":"complete","id":"x"}`)
	e.waitSubscribersBelow(1)

	c.subscribe(ctx, "x", `subscription { nope }`, nil)
	if m := c.next(ctx); m.Type != "error" || m.ID != "x" || !strings.Contains(string(m.Payload), "GRAPHQL_VALIDATION_FAILED") {
		t.Fatalf("an invalid subscription: %s %s %s, want an error", m.Type, m.ID, m.Payload)
	}

	c.subscribe(ctx, "x", likes, vars)
	e.waitSubscribers(1)
	e.mustData(e.do(e.token("bob"), `mutation($id: ID!) { likePost(id: $id) { id } }`, vars), new(any))
	e.project()
	var d struct{ LikeCount struct{ Likes int64 } }
	c.nextData(ctx, &d)
	if d.LikeCount.Likes != 1 {
		t.Fatalf("likes %d, want 1", d.LikeCount.Likes)
	}
	// The client's complete got nothing back: the next message is for the live subscription.
	e.mustData(e.do(e.token("alice"), `mutation($id: ID!) { deletePost(id: $id) }`, vars), new(any))
	e.project()
	if m := c.next(ctx); m.Type != "complete" || m.ID != "x" {
		t.Fatalf("after deletion: %s %s %s, want complete", m.Type, m.ID, m.Payload)
	}
	c.subscribe(ctx, "x", `subscription { postCreated { id } }`, nil)
	e.waitSubscribers(1)
	e.createPost("carol", "after reuse")
	e.project()
	var created struct{ PostCreated struct{ ID string } }
	c.nextData(ctx, &created)
}

// TestWebsocketBadInitsDoNotLeakDescriptors: every socket closed for a bad connection_init is
// closed at once on the server too, none left in CLOSE-WAIT.
func TestWebsocketBadInitsDoNotLeakDescriptors(t *testing.T) {
	if _, err := os.ReadDir("/proc/self/fd"); err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	e := newEnv(t)
	ctx := testCtx(t)
	e.srv.Client().CloseIdleConnections()
	base := openFDs(t)
	payloads := []string{`"x"`, `[1,2]`}
	var wg sync.WaitGroup
	errs := make(chan error, 500)
	sem := make(chan struct{}, 50)
	for i := range 500 {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(e.srv.URL, "http")+"/graphql", &websocket.DialOptions{Subprotocols: []string{"graphql-transport-ws"}})
			if err != nil {
				errs <- err
				return
			}
			defer conn.CloseNow()
			msg := `{"type":"connection_init","payload":` + payloads[i%2] + `}`
			if err := conn.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
				errs <- err
				return
			}
			if _, _, err := conn.Read(ctx); websocket.CloseStatus(err) != closeBadRequest {
				errs <- fmt.Errorf("read: %v, want 4400", err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := openFDs(t)
		if n <= base+5 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d descriptors open 5 s after 500 bad inits, %d before", n, base)
		}
		time.Sleep(10 * time.Millisecond) // polling a condition, bounded by the deadline
	}
}

func openFDs(tb testing.TB) int {
	tb.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		tb.Fatalf("read /proc/self/fd: %v", err)
	}
	return len(ents)
}

// TestWebsocketOperationLimit: the 101st operation of a socket is refused with LIMIT_EXCEEDED;
// the socket and its first 100 subscriptions keep working.
func TestWebsocketOperationLimit(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	p := e.createPost("alice", "popular")
	e.project()
	c, err := e.dialWS(ctx, "", false)
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]any{"id": p.ID}
	for i := range 101 {
		c.subscribe(ctx, fmt.Sprint("s", i), `subscription($id: ID!) { likeCount(postId: $id) { likes } }`, vars)
	}
	m := c.next(ctx)
	var errs []gqlError
	if err := json.Unmarshal(m.Payload, &errs); err != nil || m.Type != "error" || m.ID != "s100" || len(errs) != 1 || errs[0].Extensions["code"] != CodeLimitExceeded {
		t.Fatalf("the 101st subscribe got %s %s %s, want an error with LIMIT_EXCEEDED", m.Type, m.ID, m.Payload)
	}
	e.waitSubscribers(100)
	e.mustData(e.do(e.token("bob"), `mutation($id: ID!) { likePost(id: $id) { id } }`, vars), new(any))
	e.project()
	seen := map[string]bool{}
	for range 100 {
		m := c.next(ctx)
		if m.Type != "next" || !strings.Contains(string(m.Payload), `"likes":1`) || seen[m.ID] {
			t.Fatalf("got %s %s %s, want one like for each of the first 100", m.Type, m.ID, m.Payload)
		}
		seen[m.ID] = true
	}
	if seen["s100"] {
		t.Fatal("the refused subscription got a message")
	}
}

// TestWebsocketShutdownClosesWith1012: closing Stopping (and then the Hub, as serve does) closes
// every socket with 1012 and sends no complete, so that clients resubscribe.
func TestWebsocketShutdownClosesWith1012(t *testing.T) {
	stopping := make(chan struct{})
	e := newEnv(t, func(c *ServerConfig, _ *[]HubOption) { c.Stopping = stopping })
	ctx := testCtx(t)
	p := e.createPost("alice", "until shutdown")
	e.project()
	var clients []*wsClient
	for _, legacy := range []bool{false, true} {
		c, err := e.dialWS(ctx, "", legacy)
		if err != nil {
			t.Fatal(err)
		}
		c.subscribe(ctx, "likes", `subscription($id: ID!) { likeCount(postId: $id) { likes } }`, map[string]any{"id": p.ID})
		c.subscribe(ctx, "created", `subscription { postCreated { id } }`, nil)
		clients = append(clients, c)
	}
	e.waitSubscribers(4)
	close(stopping)
	e.hub.Close()
	for _, c := range clients {
		msgs, status := c.closeStatus(ctx)
		if status != closeServiceRestart || len(msgs) > 0 {
			t.Errorf("legacy=%v: close status %d after %v, want 1012 and no message", c.legacy, status, msgs)
		}
	}
	// A socket opened after the shutdown began is closed the same way.
	c, err := e.dialRaw(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, status := c.closeStatus(ctx); status != closeServiceRestart {
		t.Errorf("a socket opened during the shutdown: close status %d, want 1012", status)
	}
}

func TestWebsocketPingPong(t *testing.T) {
	e := newEnv(t, func(c *ServerConfig, _ *[]HubOption) { c.PingInterval = 100 * time.Millisecond })
	ctx := testCtx(t)

	t.Run("a client ping gets a pong", func(t *testing.T) {
		c, err := e.dialWS(ctx, "", false)
		if err != nil {
			t.Fatal(err)
		}
		c.send(ctx, `{"type":"ping","payload":{"n":1}}`)
		for {
			m, err := c.read(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if m.Type == "pong" {
				if string(m.Payload) != `{"n":1}` {
					t.Errorf("pong payload %s, want the ping's", m.Payload)
				}
				return
			}
		}
	})

	t.Run("a client answering pings stays connected", func(t *testing.T) {
		c, err := e.dialWS(ctx, "", false)
		if err != nil {
			t.Fatal(err)
		}
		pings := 0
		for pings < 6 { // 600 ms, three times the limit of a silent client
			m, err := c.read(ctx)
			if err != nil {
				t.Fatalf("after %d pings: %v", pings, err)
			}
			if m.Type == "ping" {
				pings++
				c.send(ctx, `{"type":"pong"}`)
			}
		}
	})

	t.Run("a silent client is closed after two intervals", func(t *testing.T) {
		c, err := e.dialWS(ctx, "", false)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, status := c.closeStatus(ctx)
		if status != websocket.StatusGoingAway {
			t.Fatalf("close status %d, want 1001", status)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Fatalf("closed after %s, want about 200 ms", took)
		}
	})

	t.Run("legacy keep-alive", func(t *testing.T) {
		c, err := e.dialWS(ctx, "", true)
		if err != nil {
			t.Fatal(err)
		}
		kas := 0
		for kas < 3 {
			m, err := c.read(ctx) // reading also answers the websocket's own ping frames
			if err != nil {
				t.Fatalf("after %d keep-alives: %v", kas, err)
			}
			if m.Type == "ka" {
				kas++
			}
		}
	})
}
