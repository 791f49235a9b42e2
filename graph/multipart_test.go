package graph

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/postgate/postgate/read"
)

// apolloAccept is what Apollo Client 4's HttpLink sends for a subscription.
const apolloAccept = `multipart/mixed;boundary=graphql;subscriptionSpec=1.0,application/json`

// postAccept POSTs an operation with the given Accept and token.
func (e *env) postAccept(ctx context.Context, accept, token, query string, vars map[string]any) *http.Response {
	e.tb.Helper()
	body, _ := json.Marshal(map[string]any{"query": query, "variables": vars})
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.srv.URL+"/graphql", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", accept)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := e.srv.Client().Do(req)
	if err != nil {
		e.tb.Fatalf("POST: %v", err)
	}
	return res
}

// partReader reads Apollo's multipart framing byte for byte.
type partReader struct {
	tb testing.TB
	r  *bufio.Reader
}

func newPartReader(tb testing.TB, res *http.Response) *partReader {
	tb.Helper()
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(res.Body)
		tb.Fatalf("status %d: %s", res.StatusCode, b)
	}
	if ct := res.Header.Get("Content-Type"); ct != `multipart/mixed; boundary="graphql"; subscriptionSpec="1.0"` {
		tb.Fatalf("content type %q", ct)
	}
	p := &partReader{tb: tb, r: bufio.NewReader(res.Body)}
	p.expect("\r\n--graphql")
	return p
}

func (p *partReader) expect(want string) {
	p.tb.Helper()
	got := make([]byte, len(want))
	if n, err := io.ReadFull(p.r, got); err != nil {
		p.tb.Fatalf("read %q: got %q: %v", want, got[:n], err)
	}
	if string(got) != want {
		p.tb.Fatalf("read %q, want %q", got, want)
	}
}

// next returns the body of the next part, or "" with closed true after the closing delimiter
// (which must then be the end of the response).
func (p *partReader) next() (body string, closed bool) {
	p.tb.Helper()
	two := make([]byte, 2)
	if _, err := io.ReadFull(p.r, two); err != nil {
		p.tb.Fatalf("after a delimiter: %v", err)
	}
	if string(two) == "--" {
		p.expect("\r\n")
		if rest, err := io.ReadAll(p.r); err != nil || len(rest) > 0 {
			p.tb.Fatalf("after the closing delimiter: %q, %v", rest, err)
		}
		return "", true
	}
	if string(two) != "\r\n" {
		p.tb.Fatalf("after a delimiter: %q", two)
	}
	p.expect("content-type: application/json\r\n\r\n")
	var b strings.Builder
	for !strings.HasSuffix(b.String(), "\r\n--graphql") {
		c, err := p.r.ReadByte()
		if err != nil {
			p.tb.Fatalf("part %q: %v", b.String(), err)
		}
		b.WriteByte(c)
	}
	return strings.TrimSuffix(b.String(), "\r\n--graphql"), false
}

// nextPayload skips heartbeats and returns the next part that is not one.
func (p *partReader) nextPayload() string {
	p.tb.Helper()
	for {
		body, closed := p.next()
		if closed {
			p.tb.Fatal("the stream closed")
		}
		if body != "{}" {
			return body
		}
	}
}

func TestApolloMultipartSubscriptionFraming(t *testing.T) {
	e := newEnv(t, func(c *ServerConfig, _ *[]HubOption) { c.MultipartHeartbeat = 50 * time.Millisecond })
	ctx := testCtx(t)
	p := e.createPost("alice", "multipart")
	e.project()
	res := e.postAccept(ctx, apolloAccept, e.token("bob"),
		`subscription($id: ID!) { likeCount(postId: $id) { likes version } }`, map[string]any{"id": p.ID})
	defer res.Body.Close()
	if len(res.TransferEncoding) != 1 || res.TransferEncoding[0] != "chunked" {
		t.Fatalf("transfer encoding %v, want chunked", res.TransferEncoding)
	}
	pr := newPartReader(t, res)
	e.waitSubscribers(1)
	// Heartbeats come while nothing happens.
	for range 2 {
		if body, closed := pr.next(); closed || body != "{}" {
			t.Fatalf("part %q (closed %v), want a {} heartbeat", body, closed)
		}
	}
	for i := 1; i <= 2; i++ {
		e.like(fmt.Sprintf("liker%d", i), p.ID)
		want := fmt.Sprintf(`{"payload":{"data":{"likeCount":{"likes":%d,"version":%d}}}}`, i, i)
		if got := pr.nextPayload(); got != want {
			t.Fatalf("part %q, want %q", got, want)
		}
	}
	// Deleting the post ends the stream with the closing delimiter.
	e.mustData(e.do(e.token("alice"), `mutation($id: ID!) { deletePost(id: $id) }`, map[string]any{"id": p.ID}), new(any))
	e.project()
	for {
		body, closed := pr.next()
		if closed {
			break
		}
		if body != "{}" {
			t.Fatalf("part %q after the deletion", body)
		}
	}
}

func TestApolloMultipartErrorsAndOtherOperations(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	p := e.createPost("alice", "hello")
	e.project()

	// A subscription's GraphQL error is a payload with errors, then the end.
	res := e.postAccept(ctx, apolloAccept, "", `subscription { likeCount(postId: "nope") { likes } }`, nil)
	pr := newPartReader(t, res)
	body := pr.nextPayload()
	if !strings.HasPrefix(body, `{"payload":{"errors":[`) || !strings.Contains(body, CodeNotFound) {
		t.Fatalf("unknown post: part %q", body)
	}
	if _, closed := pr.next(); !closed {
		t.Fatal("the stream of a failed subscription did not close")
	}
	res.Body.Close()

	// A query, a mutation and a validation error with that Accept: plain JSON.
	for _, c := range []struct {
		name, token, query string
		status             int
		want               string
	}{
		{"query", "", `query($id: ID!) { post(id: $id) { message } }`, 200, `{"data":{"post":{"message":"hello"}}}`},
		{"mutation", e.token("bob"), `mutation($id: ID!) { likePost(id: $id) { likes } }`, 200, `{"data":{"likePost":{"likes":1}}}`},
		{"mutation without a token", "", `mutation($id: ID!) { likePost(id: $id) { likes } }`, 200, CodeUnauthenticated},
		{"invalid", "", `query { nope }`, 422, `Cannot query field`},
	} {
		res := e.postAccept(ctx, apolloAccept, c.token, c.query, map[string]any{"id": p.ID})
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != c.status || !strings.HasPrefix(res.Header.Get("Content-Type"), "application/json") || !strings.Contains(string(b), c.want) {
			t.Errorf("%s: %d %s %s, want %d with %s", c.name, res.StatusCode, res.Header.Get("Content-Type"), b, c.status, c.want)
		}
	}
}

// TestDeferStaysOnIncrementalDelivery: @defer queries (and GraphiQL's subscriptions) still answer
// in gqlgen's incremental format when the Accept has no subscriptionSpec.
func TestDeferStaysOnIncrementalDelivery(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	p := e.createPost("alice", "deferred")
	e.project()
	res := e.postAccept(ctx, "multipart/mixed;deferSpec=20220824, application/json", "",
		`query($id: ID!) { post(id: $id) { message ... @defer { likedByMe } } }`, map[string]any{"id": p.ID})
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	ct := res.Header.Get("Content-Type")
	if !strings.HasPrefix(ct, "multipart/mixed") || strings.Contains(ct, "subscriptionSpec") {
		t.Fatalf("content type %q", ct)
	}
	s := string(b)
	if !strings.Contains(s, `"hasNext":true`) || !strings.Contains(s, `"message":"deferred"`) || !strings.Contains(s, `"likedByMe":false`) || !strings.Contains(s, `"hasNext":false`) ||
		strings.Contains(s, `"payload"`) {
		t.Fatalf("incremental answer %q", s)
	}
}

func TestApolloMultipartClientThatNeverReadsIsDropped(t *testing.T) {
	e := newEnv(t, func(c *ServerConfig, h *[]HubOption) {
		c.WebsocketWriteTimeout = 2 * time.Second
		*h = append(*h, WithBuffer(4))
	})
	ctx := testCtx(t)
	p := e.createPost("alice", "flood")
	e.project()
	res := e.postAccept(ctx, apolloAccept, "", `subscription($id: ID!) { likeCount(postId: $id) { postId likes version } }`, map[string]any{"id": p.ID})
	defer res.Body.Close()
	e.waitSubscribers(1)
	// The client reads nothing; the Hub publishes until the stream's writes block and its buffer fills.
	deadline := time.Now().Add(20 * time.Second)
	for v := int64(1); e.hubSubscribers() > 0; v++ {
		if time.Now().After(deadline) {
			t.Fatal("a client that never reads was not dropped")
		}
		e.hub.Publish([]read.Change{{PostID: p.ID, LikesChange: true, Likes: v, LikeVersion: v}})
	}
	if n := droppedTotal(t, e); n != 1 {
		t.Fatalf("dropped subscribers %v, want 1 (by the Hub, SUBSCRIBER_TOO_SLOW)", n)
	}
	// The handler lets go: the stream ends within the write timeout.
	done := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, res.Body); done <- err }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the stream of a dropped subscriber is still open")
	}
}

func TestApolloMultipartObeysTheGatewayLimit(t *testing.T) {
	e := newEnv(t, func(c *ServerConfig, _ *[]HubOption) { c.MaxSubscriptions = 2 })
	ctx := testCtx(t)
	p := e.createPost("alice", "x")
	e.project()
	q := `subscription($id: ID!) { likeCount(postId: $id) { likes } }`
	for range 2 {
		res := e.postAccept(ctx, apolloAccept, "", q, map[string]any{"id": p.ID})
		defer res.Body.Close()
	}
	e.waitSubscribers(2)
	res := e.postAccept(ctx, apolloAccept, "", q, map[string]any{"id": p.ID})
	defer res.Body.Close()
	pr := newPartReader(t, res)
	if body := pr.nextPayload(); !strings.HasPrefix(body, `{"payload":{"errors":[`) || !strings.Contains(body, CodeLimitExceeded) {
		t.Fatalf("third subscription of a gateway allowing 2: %q", body)
	}
	if _, closed := pr.next(); !closed {
		t.Fatal("a refused stream did not close")
	}
}

func TestApolloMultipartEndsWithoutCompletionOnStopping(t *testing.T) {
	stopping := make(chan struct{})
	e := newEnv(t, func(c *ServerConfig, _ *[]HubOption) { c.Stopping = stopping })
	ctx := testCtx(t)
	p := e.createPost("alice", "x")
	e.project()
	res := e.postAccept(ctx, apolloAccept, "", `subscription($id: ID!) { likeCount(postId: $id) { likes } }`, map[string]any{"id": p.ID})
	defer res.Body.Close()
	pr := newPartReader(t, res)
	e.waitSubscribers(1)
	close(stopping)
	rest, _ := io.ReadAll(pr.r)
	if len(rest) > 0 {
		t.Fatalf("after Stopping the stream sent %q, want its end without the closing delimiter", rest)
	}
	e.waitSubscribersBelow(1)
}

func droppedTotal(t *testing.T, e *env) float64 {
	t.Helper()
	families, err := e.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == "postgate_graphql_subscribers_dropped_total" {
			return f.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return 0
}

// TestApolloMultipartStreamsPerClientAreBounded: the streams of one user, as the subscriptions of
// one websocket, are at most MaxSubscriptionsPerSocket; another user is not affected, and ending
// one frees its place.
func TestApolloMultipartStreamsPerClientAreBounded(t *testing.T) {
	e := newEnv(t, func(c *ServerConfig, _ *[]HubOption) { c.MaxSubscriptionsPerSocket = 2 })
	ctx := testCtx(t)
	p := e.createPost("alice", "x")
	e.project()
	q := `subscription($id: ID!) { likeCount(postId: $id) { likes } }`
	bob, carol := e.token("bob"), e.token("carol")
	var held []*http.Response
	for range 2 {
		held = append(held, e.postAccept(ctx, apolloAccept, bob, q, map[string]any{"id": p.ID}))
	}
	e.waitSubscribers(2)
	res := e.postAccept(ctx, apolloAccept, bob, q, map[string]any{"id": p.ID})
	pr := newPartReader(t, res)
	if body := pr.nextPayload(); !strings.Contains(body, CodeLimitExceeded) {
		t.Fatalf("bob's third stream: %q", body)
	}
	res.Body.Close()
	// Carol still subscribes.
	other := e.postAccept(ctx, apolloAccept, carol, q, map[string]any{"id": p.ID})
	defer other.Body.Close()
	e.waitSubscribers(3)
	for _, r := range held {
		r.Body.Close()
	}
}
