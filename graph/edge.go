package graph

import (
	"context"
	"fmt"
	"math"
	"mime"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/hashicorp/golang-lru/v2/expirable"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"
	"golang.org/x/time/rate"
)

// This file holds the per-client bounds decided at the edge, before a resolver runs: mutations per
// user per second, subscriptions per gateway, and subscriptions only on streaming transports.

// userLimits is a token bucket per user for mutations. Its memory is bounded: at most maxUsers
// buckets are kept, and one untouched for a minute is forgotten (it would be full again by then,
// since a bucket refills completely in burst/rate seconds, 2 s by default).
type userLimits struct {
	limit rate.Limit
	burst int

	mu      sync.Mutex // makes get-or-create atomic; the LRU is safe on its own
	buckets *expirable.LRU[string, *rate.Limiter]
}

const maxRateLimitedUsers = 100_000

func newUserLimits(perSecond float64, burst int) *userLimits {
	if perSecond <= 0 {
		return nil // off
	}
	ttl := max(time.Minute, time.Duration(float64(burst)/perSecond*float64(time.Second)))
	return &userLimits{
		limit:   rate.Limit(perSecond),
		burst:   max(burst, 1),
		buckets: expirable.NewLRU[string, *rate.Limiter](maxRateLimitedUsers, nil, ttl),
	}
}

// take takes n tokens of user's bucket. When they are not there, it takes none and returns how
// long until they are, rounded up to whole seconds (at least 1).
func (u *userLimits) take(user string, n int) (ok bool, retryAfter int) {
	if u == nil {
		return true, 0
	}
	u.mu.Lock()
	l, found := u.buckets.Get(user)
	if !found {
		l = rate.NewLimiter(u.limit, u.burst)
		u.buckets.Add(user, l)
	}
	u.mu.Unlock()
	now := time.Now()
	if n > u.burst {
		n = u.burst // one operation never needs more than a full bucket (mutation fields are capped anyway)
	}
	if l.AllowN(now, n) {
		return true, 0
	}
	r := l.ReserveN(now, n)
	delay := r.DelayFrom(now)
	r.CancelAt(now)
	return false, max(1, int(math.Ceil(delay.Seconds())))
}

// rootFields counts the root fields an operation selects, through fragments.
func rootFields(doc *ast.QueryDocument, set ast.SelectionSet, seen map[string]bool) int {
	n := 0
	for _, s := range set {
		switch s := s.(type) {
		case *ast.Field:
			n++
		case *ast.InlineFragment:
			n += rootFields(doc, s.SelectionSet, seen)
		case *ast.FragmentSpread:
			if seen[s.Name] {
				continue
			}
			seen[s.Name] = true
			if f := doc.Fragments.ForName(s.Name); f != nil {
				n += rootFields(doc, f.SelectionSet, seen)
			}
		}
	}
	return n
}

// subscriptionCount bounds the subscriptions of one gateway, whatever the transport.
type subscriptionCount struct {
	max int64
	n   atomic.Int64
}

// enter counts one subscription until ctx ends; false when the gateway has as many as it allows.
func (s *subscriptionCount) enter(ctx context.Context) bool {
	if s.n.Add(1) > s.max {
		s.n.Add(-1)
		return false
	}
	context.AfterFunc(ctx, func() { s.n.Add(-1) })
	return true
}

// requestHints travel in a request's context from the HTTP layer to the operation middleware and
// back: whether the transport can stream (subscriptions need one), and the status and Retry-After
// an operation asks the HTTP response to carry.
type requestHints struct {
	streaming  bool
	httpStream bool // a subscription on this request is an HTTP stream (SSE, multipart), not a websocket
	status     atomic.Int32
	retryAfter atomic.Int32
}

type hintsKey struct{}

func hintsFrom(ctx context.Context) *requestHints {
	h, _ := ctx.Value(hintsKey{}).(*requestHints)
	return h
}

// streamingRequest reports whether r reaches a transport that streams: a websocket upgrade, SSE,
// Apollo's multipart subscriptions (multipart/mixed with subscriptionSpec) or incremental delivery
// (multipart/mixed without, what GraphiQL's fetcher asks for).
func streamingRequest(r *http.Request) bool {
	if r.Header.Get("Upgrade") != "" {
		return true
	}
	if r.Method != http.MethodPost {
		return false // SSE and both multipart transports take POSTs only: a GET would be answered once
	}
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		mt, _, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		if mt == "text/event-stream" || mt == "multipart/mixed" {
			return true
		}
	}
	return false
}

// incrementalDelivery is gqlgen's multipart/mixed transport (the incremental-delivery format of
// @defer, which GraphiQL's fetcher reads, subscriptions included), except for Apollo's multipart
// subscription protocol (subscriptionSpec), a different format it does not speak: apolloMultipart
// serves those, and comes first.
type incrementalDelivery struct {
	transport.MultipartMixed
}

// Do sends the response's headers as soon as the operation is dispatched, so that a client sees
// its subscription start instead of waiting for the first event.
func (t incrementalDelivery) Do(w http.ResponseWriter, r *http.Request, exec graphql.GraphExecutor) {
	t.MultipartMixed.Do(w, r, flushOnDispatch{GraphExecutor: exec, w: w})
}

type flushOnDispatch struct {
	graphql.GraphExecutor
	w http.ResponseWriter
}

func (f flushOnDispatch) DispatchOperation(ctx context.Context, rc *graphql.OperationContext) (graphql.ResponseHandler, context.Context) {
	h, ctx := f.GraphExecutor.DispatchOperation(ctx, rc)
	if rc.Operation != nil && rc.Operation.Operation == ast.Subscription {
		_ = http.NewResponseController(f.w).Flush()
	}
	return h, ctx
}

func (t incrementalDelivery) Supports(r *http.Request) bool {
	if !t.MultipartMixed.Supports(r) {
		return false
	}
	return !wantsApolloMultipart(r)
}

// withHints gives every /graphql request its hints.
func withHints(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := &requestHints{streaming: streamingRequest(r), httpStream: r.Header.Get("Upgrade") == ""}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), hintsKey{}, h)))
	})
}

// edgeLimits are the per-operation decisions of guardOperation that need state.
type edgeLimits struct {
	users   *userLimits
	subs    *subscriptionCount
	streams *streamCount
}

// streamCount bounds the subscription streams over HTTP (SSE, multipart) of one user, as a
// websocket bounds its own subscriptions.
type streamCount struct {
	max int
	mu  sync.Mutex
	n   map[string]int
}

func newStreamCount(max int) *streamCount { return &streamCount{max: max, n: map[string]int{}} }

// enter counts one stream of client (a user) until ctx ends; false when it has as many as allowed.
func (s *streamCount) enter(ctx context.Context, client string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n[client] >= s.max {
		return false
	}
	s.n[client]++
	context.AfterFunc(ctx, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.n[client]--; s.n[client] <= 0 {
			delete(s.n, client)
		}
	})
	return true
}

// limitMutation refuses a mutation beyond its user's rate, before any resolver runs.
func (l *edgeLimits) limitMutation(ctx context.Context, m *Metrics, user string, oc *graphql.OperationContext) *graphql.Response {
	if l == nil {
		return nil
	}
	n := max(1, rootFields(oc.Doc, oc.Operation.SelectionSet, map[string]bool{}))
	ok, retry := l.users.take(user, n)
	if ok {
		return nil
	}
	m.countError(CodeRateLimited)
	m.rateLimited()
	if h := hintsFrom(ctx); h != nil {
		h.status.Store(http.StatusTooManyRequests)
		h.retryAfter.Store(int32(retry))
	}
	return &graphql.Response{Errors: gqlerror.List{{
		Message:    fmt.Sprintf("too many mutations; retry in %d s", retry),
		Extensions: map[string]any{"code": CodeRateLimited, "retryAfter": retry},
	}}}
}

// limitSubscription refuses a subscription on a transport that cannot stream, and one beyond the
// gateway's bound.
func (l *edgeLimits) limitSubscription(ctx context.Context, m *Metrics) *graphql.Response {
	if l == nil {
		return nil
	}
	if h := hintsFrom(ctx); h != nil && !h.streaming {
		m.countError(CodeBadRequest)
		h.status.Store(http.StatusBadRequest)
		return &graphql.Response{Errors: gqlerror.List{{
			Message: "a subscription needs a streaming transport: a websocket, SSE (Accept: text/event-stream) " +
				"or incremental delivery (Accept: multipart/mixed)",
			Extensions: map[string]any{"code": CodeBadRequest},
		}}}
	}
	// An anonymous client's streams are bounded by the gateway's count only: its address is a load
	// balancer's as often as its own.
	if h := hintsFrom(ctx); h != nil && h.httpStream && l.streams != nil && viewer(ctx) != "" {
		if !l.streams.enter(ctx, viewer(ctx)) {
			m.countError(CodeLimitExceeded)
			return &graphql.Response{Errors: gqlerror.List{{
				Message:    fmt.Sprintf("at most %d subscription streams per client; end one first", l.streams.max),
				Extensions: map[string]any{"code": CodeLimitExceeded},
			}}}
		}
	}
	if !l.subs.enter(ctx) {
		m.countError(CodeLimitExceeded)
		return &graphql.Response{Errors: gqlerror.List{{
			Message:    fmt.Sprintf("this gateway serves %d subscriptions, its limit; retry later or elsewhere", l.subs.max),
			Extensions: map[string]any{"code": CodeLimitExceeded},
		}}}
	}
	return nil
}
