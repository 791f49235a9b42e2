package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
)

// testServer is a running in-process `postgate serve` with embedded defaults in a temporary data dir.
type testServer struct {
	tb   testing.TB
	addr string   // host:port
	url  string   // http://host:port
	data string   // the --data directory
	args []string // the flags serve was started with beyond the defaults; commands get them too

	tokens *tokenCache

	cancel context.CancelFunc
	done   chan error
	logs   *syncBuffer
}

// startTimeout bounds the start of serve: it starts an embedded broker and creates topics, which is
// slow on a loaded two-core machine under -race.
const startTimeout = 90 * time.Second

// startServe runs the real serve in process with --data t.TempDir() --addr 127.0.0.1:0 and returns
// once it accepts requests. Cleanup cancels its context and waits for the graceful shutdown. Its log
// is printed when the test fails.
func startServe(tb testing.TB, args ...string) *testServer {
	tb.Helper()
	s := &testServer{tb: tb, data: tb.TempDir(), args: args, tokens: &tokenCache{m: map[string]string{}}, done: make(chan error, 1), logs: &syncBuffer{}}
	flags := append([]string{"--data", s.data, "--addr", "127.0.0.1:0", "--shutdown-timeout", "20s"}, embeddedFlags...)
	cfg := serveConfig(tb, append(flags, args...))
	log := slog.New(slog.NewTextHandler(s.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))

	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	addrc := make(chan string, 1)
	go func() { s.done <- serve(ctx, cfg, log, func(addr string) { addrc <- addr }) }()
	tb.Cleanup(func() {
		s.stop(tb)
		if tb.Failed() {
			tb.Logf("serve log (last 64 KiB):\n%s", s.logs.tail(64<<10))
		}
	})
	select {
	case s.addr = <-addrc:
	case err := <-s.done:
		s.done <- err // stop reads it again
		tb.Fatalf("serve ended before it started: %v\n%s", err, s.logs.tail(16<<10))
	case <-time.After(startTimeout):
		tb.Fatalf("serve did not start within %s\n%s", startTimeout, s.logs.tail(16<<10))
	}
	s.url = "http://" + s.addr
	return s
}

// in returns a view of the server that reports failures to tb, for use in a subtest.
func (s *testServer) in(tb testing.TB) *testServer {
	c := *s
	c.tb = tb
	return &c
}

// tokenCache keeps the tokens made for each user: making one runs a command.
type tokenCache struct {
	mu sync.Mutex
	m  map[string]string
}

// embeddedFlags choose the embedded default of every piece, whatever POSTGATE_* variables the
// environment holds (flags win over the environment): these tests are about the binary, hermetic.
var embeddedFlags = []string{"--mongo-uri=", "--kafka-brokers=", "--read-dsn=", "--jwt-secret=",
	"--jwks-url=", "--jwt-issuer=", "--jwt-audience=", "--jwt-user-claim=sub", "--jwt-max-ttl=24h",
	"--roles=gateway,relay,projector", "--cors-origins=", "--introspection=true", "--complexity=5000",
	"--max-body=1048576", "--log-format=text"}

// serveConfig parses args as the serve command does.
func serveConfig(tb testing.TB, args []string) *Config {
	tb.Helper()
	fs := flag.NewFlagSet("postgate serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfg := register(fs)
	if err := fs.Parse(args); err != nil {
		tb.Fatalf("parse %q: %v", args, err)
	}
	return cfg
}

// stop cancels serve's context and waits for it to return, failing when it takes longer than the
// shutdown timeout (plus a margin for a loaded machine) or returns an error. It is idempotent.
func (s *testServer) stop(tb testing.TB) time.Duration {
	tb.Helper()
	start := time.Now()
	s.cancel()
	select {
	case err, ok := <-s.done:
		if ok {
			close(s.done)
			if err != nil && !errors.Is(err, context.Canceled) {
				tb.Errorf("serve returned %v", err)
			}
		}
	case <-time.After(30 * time.Second):
		tb.Errorf("serve did not return within 30 s of cancellation")
	}
	return time.Since(start)
}

// token returns a bearer token for user, made by the `postgate token` command over the same data dir.
func (s *testServer) token(user string) string {
	s.tb.Helper()
	s.tokens.mu.Lock()
	defer s.tokens.mu.Unlock()
	if t, ok := s.tokens.m[user]; ok {
		return t
	}
	out, errOut, code := s.command("token", "--user", user)
	if code != 0 {
		s.tb.Fatalf("postgate token --user %s: exit %d: %s", user, code, errOut)
	}
	t := strings.TrimSpace(out)
	s.tokens.m[user] = t
	return t
}

// command runs a postgate command (token, verify, ...) in process over this server's data dir.
func (s *testServer) command(args ...string) (stdout, stderr string, code int) {
	var out, errOut bytes.Buffer
	full := append(append(append([]string{args[0], "--data", s.data, "--log-level", "warn"}, embeddedFlags...), s.args...), args[1:]...)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	code = run(ctx, full, &out, &errOut)
	return out.String(), errOut.String(), code
}

// gqlError is one GraphQL error of a response.
type gqlError struct {
	Message    string         `json:"message"`
	Path       []any          `json:"path"`
	Extensions map[string]any `json:"extensions"`
}

// gqlResponse is a GraphQL response over HTTP, with the raw body for failure messages.
type gqlResponse struct {
	Data   json.RawMessage `json:"data"`
	Errors []gqlError      `json:"errors"`
	status int
	raw    string
}

// code returns the extensions.code of the first error, "" when there is none.
func (r gqlResponse) code() string {
	if len(r.Errors) == 0 {
		return ""
	}
	c, _ := r.Errors[0].Extensions["code"].(string)
	return c
}

var e2eHTTP = &http.Client{Timeout: 30 * time.Second}

// post sends a GraphQL request body to /graphql with an optional bearer token.
func (s *testServer) post(token string, body any) gqlResponse {
	s.tb.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		s.tb.Fatalf("marshal: %v", err)
	}
	req, err := http.NewRequest(http.MethodPost, s.url+"/graphql", bytes.NewReader(b))
	if err != nil {
		s.tb.Fatalf("request: %v", err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return s.send(req)
}

func (s *testServer) send(req *http.Request) gqlResponse {
	s.tb.Helper()
	resp, err := e2eHTTP.Do(req)
	if err != nil {
		s.tb.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		s.tb.Fatalf("read response: %v", err)
	}
	r := gqlResponse{status: resp.StatusCode, raw: string(raw)}
	if err := json.Unmarshal(raw, &r); err != nil {
		s.tb.Fatalf("response %d is not JSON: %s", resp.StatusCode, raw)
	}
	return r
}

// do runs query with vars as token's user ("" for anonymous).
func (s *testServer) do(token, query string, vars map[string]any) gqlResponse {
	s.tb.Helper()
	return s.post(token, map[string]any{"query": query, "variables": vars})
}

// mustData fails unless r has no errors, and decodes its data into v.
func (s *testServer) mustData(r gqlResponse, v any) {
	s.tb.Helper()
	if len(r.Errors) > 0 || r.status != http.StatusOK {
		s.tb.Fatalf("status %d, errors: %s", r.status, r.raw)
	}
	if err := json.Unmarshal(r.Data, v); err != nil {
		s.tb.Fatalf("decode data %s: %v", r.Data, err)
	}
}

// wantCode fails unless r's first error has code.
func (s *testServer) wantCode(what string, r gqlResponse, code string) {
	s.tb.Helper()
	if r.code() != code {
		s.tb.Errorf("%s: code %q, want %q (status %d, body %s)", what, r.code(), code, r.status, r.raw)
	}
}

// wsConn is a GraphQL client over a websocket speaking graphql-transport-ws
// (https://github.com/enisdenjo/graphql-ws/blob/master/PROTOCOL.md), written here from the protocol.
type wsConn struct {
	tb   testing.TB
	conn *websocket.Conn
}

// wsMessage is one graphql-transport-ws message.
type wsMessage struct {
	ID      string          `json:"id,omitempty"`
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

// dialWS opens /graphql with the graphql-transport-ws subprotocol and sends connection_init with the
// token (if any) in its payload. It returns after connection_ack, or the error that prevented it
// (for a rejected token, a websocket.CloseError carrying the close code).
func (s *testServer) dialWS(ctx context.Context, token string) (*wsConn, error) {
	s.tb.Helper()
	conn, _, err := websocket.Dial(ctx, "ws://"+s.addr+"/graphql", &websocket.DialOptions{
		Subprotocols: []string{"graphql-transport-ws"},
	})
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	if p := conn.Subprotocol(); p != "graphql-transport-ws" {
		conn.CloseNow()
		return nil, fmt.Errorf("server chose subprotocol %q", p)
	}
	conn.SetReadLimit(1 << 20)
	s.tb.Cleanup(func() { conn.CloseNow() })
	c := &wsConn{tb: s.tb, conn: conn}
	payload := map[string]any{}
	if token != "" {
		payload["Authorization"] = "Bearer " + token
	}
	if err := wsjson.Write(ctx, conn, map[string]any{"type": "connection_init", "payload": payload}); err != nil {
		return nil, fmt.Errorf("connection_init: %w", err)
	}
	for {
		m, err := c.read(ctx)
		if err != nil {
			return nil, err
		}
		switch m.Type {
		case "connection_ack":
			return c, nil
		case "ping", "pong":
			continue
		default:
			return nil, fmt.Errorf("got %q before connection_ack", m.Type)
		}
	}
}

// read returns the next message, answering pings (the server pings every 10 s by default).
func (c *wsConn) read(ctx context.Context) (wsMessage, error) {
	for {
		var m wsMessage
		if err := wsjson.Read(ctx, c.conn, &m); err != nil {
			return m, err
		}
		switch m.Type {
		case "ping":
			if err := wsjson.Write(ctx, c.conn, map[string]string{"type": "pong"}); err != nil {
				return m, fmt.Errorf("pong: %w", err)
			}
			continue
		case "pong":
			continue
		}
		return m, nil
	}
}

// subscribe starts operation id.
func (c *wsConn) subscribe(ctx context.Context, id, query string, vars map[string]any) {
	c.tb.Helper()
	payload, err := json.Marshal(map[string]any{"query": query, "variables": vars})
	if err != nil {
		c.tb.Fatalf("marshal: %v", err)
	}
	if err := wsjson.Write(ctx, c.conn, wsMessage{ID: id, Type: "subscribe", Payload: payload}); err != nil {
		c.tb.Fatalf("subscribe: %v", err)
	}
}

// next returns the next next/error/complete message, failing the test on a read error.
func (c *wsConn) next(ctx context.Context) wsMessage {
	c.tb.Helper()
	m, err := c.read(ctx)
	if err != nil {
		c.tb.Fatalf("read websocket: %v", err)
	}
	return m
}

// nextData expects a "next" message for id without errors and decodes its data into v.
func (c *wsConn) nextData(ctx context.Context, id string, v any) {
	c.tb.Helper()
	c.decodeNext(c.next(ctx), id, v)
}

// decodeNext expects m to be a "next" message for id without errors and decodes its data into v.
func (c *wsConn) decodeNext(m wsMessage, id string, v any) {
	c.tb.Helper()
	if m.Type != "next" || m.ID != id {
		c.tb.Fatalf("message %s id %q %s, want next for %q", m.Type, m.ID, m.Payload, id)
	}
	var r gqlResponse
	if err := json.Unmarshal(m.Payload, &r); err != nil || len(r.Errors) > 0 {
		c.tb.Fatalf("payload %s: %v", m.Payload, err)
	}
	if err := json.Unmarshal(r.Data, v); err != nil {
		c.tb.Fatalf("data %s: %v", r.Data, err)
	}
}

// testDeadline returns a context ending after d, cancelled at the end of the test.
func testDeadline(tb testing.TB, d time.Duration) context.Context {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	tb.Cleanup(cancel)
	return ctx
}

// eventually polls cond every few milliseconds until it returns nil or d passes, then fails with its
// last error. It is how tests wait for the asynchronous read model, never with a bare sleep.
func eventually(tb testing.TB, d time.Duration, what string, cond func() error) {
	tb.Helper()
	end := time.Now().Add(d)
	wait := 5 * time.Millisecond
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(end) {
			tb.Fatalf("%s: not within %s: %v", what, d, err)
		}
		time.Sleep(wait) // polling a condition, bounded by the deadline above
		if wait < 200*time.Millisecond {
			wait *= 2
		}
	}
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) tail(n int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.buf.String()
	if len(s) > n {
		s = "...\n" + s[len(s)-n:]
	}
	return s
}
