package graph

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/handler"
	"github.com/99designs/gqlgen/graphql/handler/extension"
	"github.com/99designs/gqlgen/graphql/handler/lru"
	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/rs/cors"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/postgate/postgate/read"
)

// ServerConfig holds the server's settings. The zero value of every field but Secret is a usable default.
type ServerConfig struct {
	// Secret verifies bearer tokens (HS256). Required.
	Secret []byte
	// JWKS, when set, also verifies an identity provider's tokens (RS*, PS*, ES*, EdDSA) against
	// its key set; JWTIssuer and JWTAudience, when set, must match their "iss" and "aud", and
	// JWTUserClaim (default "sub") names their user.
	JWKS         *JWKS
	JWTIssuer    string
	JWTAudience  string
	JWTUserClaim string
	// MaxTokenTTL is the longest lifetime of any token (default 24 h).
	MaxTokenTTL time.Duration
	// AllowedOrigins are the origins allowed by CORS and for websockets (patterns such as
	// "https://*.example.com"). Empty allows same-origin requests and clients without an Origin.
	AllowedOrigins []string
	// DisableIntrospection turns schema introspection off (it is on by default).
	DisableIntrospection bool
	// QueryCacheSize is the number of parsed queries kept (default 1000).
	QueryCacheSize int
	// APQCacheSize is the number of persisted queries kept (default 1000).
	APQCacheSize int
	// ComplexityLimit bounds the complexity of one operation (default 5000; a page of 20 posts
	// with every field and their first 20 comments costs about 3,500, one of 100 posts with every
	// field but comments about 1,500).
	ComplexityLimit int
	// ParserTokenLimit bounds the tokens of one query document (default 15000).
	ParserTokenLimit int
	// MaxBodyBytes bounds a request body (default 1 MiB).
	MaxBodyBytes int64
	// MutationRate and MutationBurst bound the mutation root fields one user may run: a token
	// bucket of MutationBurst (default 40) refilled at MutationRate a second (default 20); a
	// negative rate turns the bound off. Over it: RATE_LIMITED with retryAfter, HTTP 429.
	MutationRate  float64
	MutationBurst int
	// MaxSubscriptions bounds the subscriptions of this gateway over every transport (default
	// 50,000); beyond it a subscribe gets LIMIT_EXCEEDED.
	MaxSubscriptions int
	// MaxAliases bounds the aliases of one query document (default 30).
	MaxAliases int
	// MaxSelectionFields bounds the fields of one selection set, counting those its fragments
	// spread (default 200).
	MaxSelectionFields int
	// MaxMutationFields bounds the root fields of one mutation (default 10).
	MaxMutationFields int
	// MaxDepth bounds the fields on the longest path of an operation: { post { id } } is 2 deep
	// (default 12).
	MaxDepth int
	// MaxAnswerBytes bounds one answer, or one subscription event, as estimated while its fields
	// resolve (default 8 MiB).
	MaxAnswerBytes int64
	// MaxErrors bounds the errors of one response, the last of which then says how many more
	// there were (default 20).
	MaxErrors int
	// PingInterval is the websocket ping interval of both subprotocols (default 10 s). A
	// graphql-transport-ws connection from which nothing is read within two intervals of a ping
	// is closed.
	PingInterval time.Duration
	// WebsocketInitTimeout is how long a websocket may take to send connection_init (default
	// 10 s); then it is closed with 4408.
	WebsocketInitTimeout time.Duration
	// WebsocketWriteTimeout bounds one websocket write, or one part of a multipart subscription
	// (default 5 s): a client that stops reading is disconnected instead of holding its operations.
	WebsocketWriteTimeout time.Duration
	// MultipartHeartbeat is the interval of the {} heartbeat parts of Apollo's multipart
	// subscriptions (default 5 s). Their writes are bounded by WebsocketWriteTimeout too.
	MultipartHeartbeat time.Duration
	// MaxSubscriptionsPerSocket bounds the active operations of one websocket (default 100); a
	// further subscribe gets an error with code LIMIT_EXCEEDED. It also bounds the subscription
	// streams over HTTP (SSE, multipart) of one user (anonymous streams: the gateway's bound only).
	MaxSubscriptionsPerSocket int
	// Stopping, when closed, closes every websocket with 1012 (service restart) and no
	// "complete" for its subscriptions, and ends multipart subscriptions without their closing
	// delimiter, so that clients reconnect and resubscribe. Close it before the Hub is closed. Nil: websockets end only with the server's base context.
	Stopping <-chan struct{}
	// Logger receives internal errors (default: discarded).
	Logger *slog.Logger
	// Metrics records requests, errors by code, mutation latency and subscribers (nil: none).
	Metrics *Metrics

	// withoutLimits leaves out every per-client limit (documents, answers, errors, mutation rate,
	// subscriptions on streaming transports and their count), for the benchmark that
	// measures what they cost.
	withoutLimits bool
}

func (c ServerConfig) withDefaults() ServerConfig {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.QueryCacheSize, 1000)
	def(&c.APQCacheSize, 1000)
	def(&c.ComplexityLimit, 5000)
	def(&c.ParserTokenLimit, 15000)
	def(&c.MutationBurst, 40)
	def(&c.MaxSubscriptions, 50000)
	if c.MutationRate == 0 {
		c.MutationRate = 20
	}
	def(&c.MaxSubscriptionsPerSocket, 100)
	def(&c.MaxAliases, 30)
	def(&c.MaxSelectionFields, 200)
	def(&c.MaxMutationFields, 10)
	def(&c.MaxDepth, 12)
	def(&c.MaxErrors, 20)
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = 1 << 20
	}
	if c.MaxAnswerBytes <= 0 {
		c.MaxAnswerBytes = 8 << 20
	}
	if c.PingInterval <= 0 {
		c.PingInterval = 10 * time.Second
	}
	if c.WebsocketInitTimeout <= 0 {
		c.WebsocketInitTimeout = 10 * time.Second
	}
	if c.WebsocketWriteTimeout <= 0 {
		c.WebsocketWriteTimeout = 5 * time.Second
	}
	if c.MultipartHeartbeat <= 0 {
		c.MultipartHeartbeat = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// NewServer returns the HTTP handler of the GraphQL API: /graphql (POST, GET, websocket with the
// graphql-transport-ws and legacy graphql-ws subprotocols, SSE, Apollo's multipart subscriptions,
// incremental delivery) and / (GraphiQL, served from
// embedded assets). Errors: an empty secret or a resolver without Commands, Reads or Changes.
func NewServer(cfg ServerConfig, r *Resolver) (http.Handler, error) {
	if len(cfg.Secret) == 0 {
		return nil, errors.New("graph server: empty token secret")
	}
	if r == nil || r.Commands == nil || r.Reads == nil || r.Changes == nil {
		return nil, errors.New("graph server: resolver needs Commands, Reads and Changes")
	}
	cfg = cfg.withDefaults()
	tokens := cfg.tokens()
	if r.Logger == nil {
		r.Logger = cfg.Logger
	}

	guard, err := newDocumentGuard(documentLimits{
		aliases:         cfg.MaxAliases,
		selectionFields: cfg.MaxSelectionFields,
		mutationFields:  cfg.MaxMutationFields,
		depth:           cfg.MaxDepth,
	}, cfg.ParserTokenLimit, cfg.QueryCacheSize, cfg.Metrics)
	if err != nil {
		return nil, fmt.Errorf("graph server: %w", err)
	}

	srv := handler.New(NewExecutableSchema(Config{Resolvers: r, Complexity: complexity()}))
	// Transports: first match wins, so the websocket upgrade is tried first and SSE before POST.
	// The websocket transport sends parse and validation errors past the response middleware:
	// capping them takes a wrapper.
	var ws graphql.Transport = newWebsocketTransport(cfg, tokens)
	if !cfg.withoutLimits {
		ws = cappedTransport{Transport: ws, max: cfg.MaxErrors}
	}
	srv.AddTransport(ws)
	srv.AddTransport(transport.SSE{})
	// Apollo's multipart subscriptions before incremental delivery: both ask for multipart/mixed.
	srv.AddTransport(apolloMultipart{heartbeat: cfg.MultipartHeartbeat, writeTimeout: cfg.WebsocketWriteTimeout, stopping: cfg.Stopping})
	// Parts are gathered for 20 ms (gqlgen's default of 1 ms ticks a thousand times a second for
	// every open stream).
	srv.AddTransport(incrementalDelivery{transport.MultipartMixed{Boundary: "graphql", DeliveryTimeout: 20 * time.Millisecond}})
	srv.AddTransport(transport.Options{})
	srv.AddTransport(transport.GET{})
	srv.AddTransport(transport.POST{})

	srv.SetQueryCache(lru.New[*ast.QueryDocument](cfg.QueryCacheSize))
	srv.SetParserTokenLimit(cfg.ParserTokenLimit)
	if !cfg.DisableIntrospection {
		srv.Use(extension.Introspection{})
	}
	srv.Use(codedAPQ{extension.AutomaticPersistedQuery{Cache: lru.New[string](cfg.APQCacheSize)}})
	if !cfg.withoutLimits {
		srv.Use(guard) // after APQ, so that persisted queries are measured too
	}
	srv.Use(extension.FixedComplexityLimit(cfg.ComplexityLimit))
	srv.SetErrorPresenter(presentError(cfg.Logger, cfg.Metrics))
	srv.SetRecoverFunc(recoverPanic(cfg.Logger))
	srv.AroundOperations(cfg.Metrics.aroundOperations)
	srv.AroundOperations(traceOperations)
	var limits *edgeLimits // nil: none
	if !cfg.withoutLimits {
		limits = &edgeLimits{
			users:   newUserLimits(cfg.MutationRate, cfg.MutationBurst),
			subs:    &subscriptionCount{max: int64(cfg.MaxSubscriptions)},
			streams: newStreamCount(cfg.MaxSubscriptionsPerSocket),
		}
	}
	srv.AroundOperations(guardOperation(cfg.Metrics, limits))
	srv.AroundRootFields(cfg.Metrics.aroundRootFields)
	// Outermost first: the error cap sees the errors of the whole response, and the answer limit
	// the fields that the per-response dataloaders resolve.
	if !cfg.withoutLimits {
		srv.AroundResponses(capErrors(cfg.MaxErrors))
		srv.AroundResponses(answerLimit(cfg.MaxAnswerBytes, cfg.Metrics))
		srv.AroundFields(meterAnswer)
	}
	srv.AroundResponses(perResponse(r))

	mux := http.NewServeMux()
	var api http.Handler = traceContext(codedErrors(limitBody(cfg.MaxBodyBytes, authenticate(tokens, cfg.Metrics, srv))))
	if !cfg.withoutLimits {
		api = withHints(api)
	}
	mux.Handle("/graphql", api)
	mountGraphiQL(mux, "/graphql")

	c := cors.New(cors.Options{
		AllowedOrigins:   cfg.AllowedOrigins,
		AllowedMethods:   []string{http.MethodGet, http.MethodPost, http.MethodOptions},
		AllowedHeaders:   []string{"Authorization", "Content-Type", "Accept"},
		AllowCredentials: false,
		MaxAge:           600,
	})
	if len(cfg.AllowedOrigins) == 0 {
		return mux, nil
	}
	return c.Handler(mux), nil
}

// tokens returns the verifier of the configured bearer tokens.
func (c ServerConfig) tokens() *tokenVerifier {
	return newTokenVerifier(TokenConfig{Secret: c.Secret, JWKS: c.JWKS, Issuer: c.JWTIssuer,
		Audience: c.JWTAudience, UserClaim: c.JWTUserClaim, MaxTTL: c.MaxTokenTTL, Logger: c.Logger})
}

func originPatterns(origins []string) []string {
	out := make([]string, 0, len(origins))
	for _, o := range origins {
		// coder/websocket matches host patterns, not URLs: drop the scheme.
		if _, host, ok := strings.Cut(o, "://"); ok {
			o = host
		}
		out = append(out, o)
	}
	return out
}

// guardOperation fails an operation that presented a bad token, a mutation without a token or
// beyond its user's rate, and a subscription on a transport that cannot stream or beyond the
// gateway's bound, before any resolver runs. It also gives subscriptions the flag that reports an
// overflow.
func guardOperation(m *Metrics, limits *edgeLimits) graphql.OperationMiddleware {
	return func(ctx context.Context, next graphql.OperationHandler) graphql.ResponseHandler {
		id := identityFrom(ctx)
		oc := graphql.GetOperationContext(ctx)
		if id.bad != nil {
			m.countError(CodeUnauthenticated)
			return graphql.OneShot(unauthenticated(refusal(id.bad)))
		}
		if id.expired(time.Now()) {
			// A websocket is authenticated once, at connection_init: its token can expire while
			// it stays open, and every operation after that is refused.
			m.countError(CodeUnauthenticated)
			return graphql.OneShot(unauthenticated(refusal(ErrTokenExpired)))
		}
		if oc != nil && oc.Operation != nil {
			switch oc.Operation.Operation {
			case ast.Mutation:
				if id.user == "" {
					m.countError(CodeUnauthenticated)
					return graphql.OneShot(unauthenticated("a valid bearer token is required"))
				}
				if resp := limits.limitMutation(ctx, m, id.user, oc); resp != nil {
					return graphql.OneShot(resp)
				}
			case ast.Subscription:
				if resp := limits.limitSubscription(ctx, m); resp != nil {
					return graphql.OneShot(resp)
				}
				ctx = context.WithValue(ctx, overflowKey{}, new(atomic.Bool))
			}
		}
		return next(ctx)
	}
}

func unauthenticated(msg string) *graphql.Response {
	return &graphql.Response{Errors: gqlerror.List{{Message: msg, Extensions: map[string]any{"code": CodeUnauthenticated}}}}
}

type overflowKey struct{}

func overflowFlag(ctx context.Context) *atomic.Bool {
	f, _ := ctx.Value(overflowKey{}).(*atomic.Bool)
	return f
}

// perResponse gives every response (a query's result, or one subscription event) fresh dataloaders,
// and turns the end of a subscription that was dropped for overflow into an error message.
func perResponse(r *Resolver) graphql.ResponseMiddleware {
	return func(ctx context.Context, next graphql.ResponseHandler) *graphql.Response {
		ctx = context.WithValue(ctx, loadersKey{}, &lazyLoaders{reads: r.Reads, user: viewer(ctx)})
		resp := next(ctx)
		if resp == nil {
			if f := overflowFlag(ctx); f != nil && f.CompareAndSwap(true, false) {
				return &graphql.Response{Errors: gqlerror.List{{
					Message:    "subscription dropped: the client did not keep up with its messages",
					Extensions: map[string]any{"code": CodeTooSlow},
				}}}
			}
		}
		return resp
	}
}

// limitBody bounds request bodies. A declared length over the limit is refused at once with 413;
// a body that only turns out too long while reading fails in the transport, which the error
// presenter reports as "request body is too large".
func limitBody(limit int64, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > limit {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusRequestEntityTooLarge)
			fmt.Fprintf(w, `{"errors":[{"message":"request body is larger than %d bytes","extensions":{"code":%q}}],"data":null}`, limit, CodeBadRequest)
			return
		}
		if r.Body != nil {
			r.Body = http.MaxBytesReader(w, r.Body, limit)
		}
		next.ServeHTTP(w, r)
	})
}

// codedAPQ is gqlgen's persisted-query extension with a code on every error: its "provided APQ
// hash does not match query" carried none.
type codedAPQ struct {
	extension.AutomaticPersistedQuery
}

func (a codedAPQ) MutateOperationParameters(ctx context.Context, raw *graphql.RawParams) *gqlerror.Error {
	err := a.AutomaticPersistedQuery.MutateOperationParameters(ctx, raw)
	if err != nil && err.Extensions["code"] == nil {
		if err.Extensions == nil {
			err.Extensions = map[string]any{}
		}
		err.Extensions["code"] = CodeBadUserInput
	}
	return err
}

// codedErrors gives a code to the errors gqlgen's transports answer with by themselves, before
// any operation runs ("transport not supported", a mutation over GET): the contract promises
// extensions.code on every error. Only responses with an error status are looked at.
func codedErrors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cw := &codingWriter{ResponseWriter: w, hints: hintsFrom(r.Context())}
		next.ServeHTTP(cw, r)
		cw.finish()
	})
}

// codingWriter passes a response through, except one with a status of 400 or more, which it
// holds until the end to add the missing codes.
type codingWriter struct {
	http.ResponseWriter
	hints  *requestHints // an operation's status (429, 400) replaces the transport's 200
	status int
	held   bytes.Buffer
}

func (c *codingWriter) WriteHeader(status int) {
	if c.status != 0 {
		return
	}
	if h := c.hints; h != nil && status == http.StatusOK {
		if s := int(h.status.Load()); s != 0 {
			status = s
			if ra := h.retryAfter.Load(); ra > 0 {
				c.ResponseWriter.Header().Set("Retry-After", strconv.Itoa(int(ra)))
			}
		}
	}
	c.status = status
	if status < 400 {
		c.ResponseWriter.WriteHeader(status)
	}
}

func (c *codingWriter) Write(b []byte) (int, error) {
	if c.status == 0 {
		c.WriteHeader(http.StatusOK)
	}
	if c.status >= 400 {
		return c.held.Write(b)
	}
	return c.ResponseWriter.Write(b)
}

func (c *codingWriter) finish() {
	if c.status < 400 {
		return
	}
	body := c.held.Bytes()
	var resp struct {
		Errors []map[string]any `json:"errors"`
		Data   any              `json:"data"`
	}
	if json.Unmarshal(body, &resp) == nil && len(resp.Errors) > 0 {
		for _, e := range resp.Errors {
			ext, _ := e["extensions"].(map[string]any)
			if ext == nil {
				ext = map[string]any{}
				e["extensions"] = ext
			}
			if _, ok := ext["code"]; !ok {
				ext["code"] = CodeBadRequest
			}
		}
		if b, err := json.Marshal(resp); err == nil {
			body = b
			c.ResponseWriter.Header().Del("Content-Length")
		}
	}
	c.ResponseWriter.WriteHeader(c.status)
	_, _ = c.ResponseWriter.Write(body)
}

// Flush, Hijack and Unwrap keep SSE streaming and websocket upgrades working through the wrapper.
func (c *codingWriter) Flush() {
	if c.status == 0 {
		c.WriteHeader(http.StatusOK) // a flush sends the headers: the status is decided now
	}
	if f, ok := c.ResponseWriter.(http.Flusher); ok && c.status < 400 {
		f.Flush()
	}
}

func (c *codingWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	h, ok := c.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("hijacking not supported")
	}
	return h.Hijack()
}

func (c *codingWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// complexity makes lists cost what they can return: a page of posts, or of a post's comments,
// costs its size times what each item costs. Without it gqlgen counts a list once, and aliasing 60
// pages of 100 posts with their comments passed the limit.
func complexity() ComplexityRoot {
	var c ComplexityRoot
	c.Query.Posts = func(child int, first *int64, _ *string, _ *string, _ *int64, _ *bool, _ *PostOrder) int {
		return 1 + pageSize(first, defaultPageSize, maxPageSize)*child
	}
	c.Post.Comments = func(child int, first *int64, _ *string) int {
		return 1 + pageSize(first, defaultCommentPage, read.MaxCommentPage)*child
	}
	return c
}

// pageSize is the most items a page of first can hold: the default when first is absent, never
// more than the maximum (a larger first is refused by the resolver anyway).
func pageSize(first *int64, def, most int) int {
	if first == nil || *first < 1 {
		return def
	}
	return int(min(*first, int64(most)))
}
