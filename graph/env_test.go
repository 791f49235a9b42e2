package graph

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/postgate/postgate/read"
	rsqlite "github.com/postgate/postgate/read/sqlite"
	"github.com/postgate/postgate/write"
	wsqlite "github.com/postgate/postgate/write/sqlite"
)

var testSecret = []byte("test-secret-0123456789abcdef")

// env is a whole gateway over the real embedded pieces: the SQLite event store, the SQLite read
// model and the Hub, with the projection driven synchronously by the test (project).
type env struct {
	tb       testing.TB
	store    *wsqlite.EventStore
	model    *rsqlite.Model
	reads    *countingQueries
	hub      *Hub
	commands *write.Handler
	srv      *httptest.Server
	registry *prometheus.Registry

	projectMu sync.Mutex
	position  int64
}

type envOption func(*ServerConfig, *[]HubOption)

func newEnv(tb testing.TB, opts ...envOption) *env {
	tb.Helper()
	ctx := context.Background()
	dir := tb.TempDir()
	store, err := wsqlite.Open(ctx, filepath.Join(dir, "events.db"))
	if err != nil {
		tb.Fatalf("open event store: %v", err)
	}
	tb.Cleanup(func() { store.Close() })
	model, err := rsqlite.Open(ctx, filepath.Join(dir, "read.db"))
	if err != nil {
		tb.Fatalf("open read model: %v", err)
	}
	tb.Cleanup(func() { model.Close() })
	if err := model.Migrate(ctx); err != nil {
		tb.Fatalf("migrate read model: %v", err)
	}
	e := &env{tb: tb, store: store, model: model, reads: &countingQueries{Queries: model}, registry: prometheus.NewRegistry()}
	metrics, err := NewMetrics(e.registry)
	if err != nil {
		tb.Fatalf("metrics: %v", err)
	}
	cfg := ServerConfig{Secret: testSecret, Metrics: metrics}
	hubOpts := []HubOption{WithHubMetrics(metrics)}
	for _, o := range opts {
		o(&cfg, &hubOpts)
	}
	e.hub = NewHub(e.reads, hubOpts...)
	e.commands = write.NewHandler(store)
	h, err := NewServer(cfg, &Resolver{Commands: e.commands, Reads: e.reads, Changes: e.hub})
	if err != nil {
		tb.Fatalf("new server: %v", err)
	}
	e.srv = httptest.NewServer(h)
	tb.Cleanup(e.srv.Close)
	return e
}

// project applies every event appended since the last call to the read model, then publishes the
// committed changes to the Hub, as the projector does.
func (e *env) project() {
	e.tb.Helper()
	e.projectMu.Lock()
	defer e.projectMu.Unlock()
	ctx := context.Background()
	for {
		evs, err := e.store.ReadAll(ctx, e.position, 500)
		if err != nil {
			e.tb.Errorf("read events: %v", err)
			return
		}
		if len(evs) == 0 {
			return
		}
		changes, err := e.model.Apply(ctx, evs)
		if err != nil {
			e.tb.Errorf("apply events: %v", err)
			return
		}
		e.position = evs[len(evs)-1].Position
		e.hub.Publish(changes)
	}
}

func (e *env) token(user string) string {
	e.tb.Helper()
	tok, err := IssueToken(testSecret, user, time.Hour)
	if err != nil {
		e.tb.Fatalf("issue token: %v", err)
	}
	return tok
}

type gqlError struct {
	Message    string         `json:"message"`
	Extensions map[string]any `json:"extensions"`
	Path       []any          `json:"path"`
}

type gqlResponse struct {
	Data   json.RawMessage `json:"data"`
	Errors []gqlError      `json:"errors"`
	status int
	raw    string
}

func (r gqlResponse) code() string {
	if len(r.Errors) == 0 {
		return ""
	}
	c, _ := r.Errors[0].Extensions["code"].(string)
	return c
}

// do posts one GraphQL request; token "" sends none.
func (e *env) do(token, query string, vars map[string]any) gqlResponse {
	e.tb.Helper()
	return e.doBody(token, map[string]any{"query": query, "variables": vars})
}

func (e *env) doBody(token string, body any) gqlResponse {
	e.tb.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		e.tb.Fatalf("marshal request: %v", err)
	}
	return e.doRaw(token, b)
}

func (e *env) doRaw(token string, body []byte) gqlResponse {
	e.tb.Helper()
	req, err := http.NewRequest(http.MethodPost, e.srv.URL+"/graphql", bytes.NewReader(body))
	if err != nil {
		e.tb.Fatalf("new request: %v", err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := e.srv.Client().Do(req)
	if err != nil {
		e.tb.Fatalf("post: %v", err)
	}
	defer res.Body.Close()
	var buf bytes.Buffer
	buf.ReadFrom(res.Body)
	out := gqlResponse{status: res.StatusCode, raw: buf.String()}
	if err := json.Unmarshal(buf.Bytes(), &out); err != nil {
		e.tb.Fatalf("decode response %q: %v", buf.String(), err)
	}
	return out
}

// mustData fails the test on any error and decodes data into v.
func (e *env) mustData(r gqlResponse, v any) {
	e.tb.Helper()
	if len(r.Errors) > 0 {
		e.tb.Fatalf("unexpected errors: %s", r.raw)
	}
	if err := json.Unmarshal(r.Data, v); err != nil {
		e.tb.Fatalf("decode data %s: %v", r.Data, err)
	}
}

type postJSON struct {
	ID           string          `json:"id"`
	Author       string          `json:"author"`
	Message      string          `json:"message"`
	CreatedAt    string          `json:"createdAt"`
	EditedAt     *string         `json:"editedAt"`
	Likes        int64           `json:"likes"`
	LikedByMe    bool            `json:"likedByMe"`
	CommentCount int64           `json:"commentCount"`
	Comments     commentConnJSON `json:"comments"`
	Version      int64           `json:"version"`
}

type commentJSON struct {
	ID        string  `json:"id"`
	PostID    string  `json:"postId"`
	Author    string  `json:"author"`
	Text      string  `json:"text"`
	CreatedAt string  `json:"createdAt"`
	EditedAt  *string `json:"editedAt"`
}

// commentConnJSON is a CommentConnection as a client reads it.
type commentConnJSON struct {
	Edges []struct {
		Cursor string      `json:"cursor"`
		Node   commentJSON `json:"node"`
	} `json:"edges"`
	PageInfo struct {
		HasNextPage bool    `json:"hasNextPage"`
		EndCursor   *string `json:"endCursor"`
	} `json:"pageInfo"`
}

// nodes returns the comments of the page, in order.
func (c commentConnJSON) nodes() []commentJSON {
	out := make([]commentJSON, len(c.Edges))
	for i, e := range c.Edges {
		out[i] = e.Node
	}
	return out
}

const commentFields = `id postId author text createdAt editedAt`

const postFields = `id author message createdAt editedAt likes likedByMe commentCount version comments { edges { cursor node { ` + commentFields + ` } } pageInfo { hasNextPage endCursor } }`

func (e *env) createPost(user, message string) postJSON {
	e.tb.Helper()
	var d struct{ CreatePost postJSON }
	e.mustData(e.do(e.token(user), `mutation($m: String!) { createPost(message: $m) { `+postFields+` } }`, map[string]any{"m": message}), &d)
	return d.CreatePost
}

// countingQueries counts the read-model queries per method, to pin batching.
type countingQueries struct {
	read.Queries
	posts, comments, likedBy, single, versions atomic.Int64
}

func (c *countingQueries) StreamVersion(ctx context.Context, stream string) (int64, error) {
	c.versions.Add(1)
	return c.Queries.StreamVersion(ctx, stream)
}

func (c *countingQueries) Post(ctx context.Context, id string) (read.Post, bool, error) {
	c.single.Add(1)
	return c.Queries.Post(ctx, id)
}

func (c *countingQueries) Posts(ctx context.Context, f read.PostFilter) (read.PostPage, error) {
	c.posts.Add(1)
	return c.Queries.Posts(ctx, f)
}

func (c *countingQueries) CommentPages(ctx context.Context, ids []string, first int, after string) (map[string]read.CommentPage, error) {
	c.comments.Add(1)
	return c.Queries.CommentPages(ctx, ids, first, after)
}

func (c *countingQueries) LikedBy(ctx context.Context, user string, ids []string) (map[string]bool, error) {
	c.likedBy.Add(1)
	return c.Queries.LikedBy(ctx, user, ids)
}
