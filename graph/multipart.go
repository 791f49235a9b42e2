package graph

import (
	"context"
	"encoding/json"
	"errors"
	"mime"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"
)

// apolloMultipart serves Apollo's multipart HTTP subscription protocol
// (https://www.apollographql.com/docs/graphos/routing/operations/subscriptions/multipart-protocol),
// what Apollo Client's HttpLink, Apollo Kotlin and Apollo iOS send: a POST whose Accept is
// multipart/mixed with a subscriptionSpec parameter. A subscription answers
//
//	Content-Type: multipart/mixed; boundary="graphql"; subscriptionSpec="1.0"
//
// and streams parts, each complete (its delimiter written with it) and flushed as it is written:
//
//	\r\n--graphql
//	\r\ncontent-type: application/json\r\n\r\n{"payload":{"data":...}}\r\n--graphql
//	\r\ncontent-type: application/json\r\n\r\n{}\r\n--graphql          (a heartbeat)
//	--\r\n                                                                (the stream ended)
//
// A fatal transport error (the subscriber fell behind and was dropped, a panic) is a part
// {"payload":null,"errors":[...]}, then the closing delimiter. GraphQL errors of an event stay in
// its payload. On Stopping the stream ends without the closing delimiter, which clients take for
// a broken stream, not a finished subscription, so that they reconnect (with after).
//
// Any other operation sent with that Accept (Apollo's HttpLink asks for it on every request once
// subscriptions are in use) is answered as plain application/json, as the POST transport would.
//
// Operations go through the executor as in the other transports (CreateOperationContext,
// DispatchOperation, DispatchError): the same middleware, limits, auth, metrics and error presenter
// apply. Budget of one stream: the handler's goroutine, blocked on the next event, and a timer
// goroutine for heartbeats and Stopping; writes are serialised and each is bounded by
// writeTimeout, so that a client that stops reading is disconnected.
type apolloMultipart struct {
	heartbeat    time.Duration
	writeTimeout time.Duration
	stopping     <-chan struct{}
}

var _ graphql.Transport = apolloMultipart{}

const (
	apolloBoundary    = "graphql"
	apolloContentType = `multipart/mixed; boundary="graphql"; subscriptionSpec="1.0"`
	apolloDelimiter   = "\r\n--" + apolloBoundary
	apolloPartHeader  = "\r\ncontent-type: application/json\r\n\r\n"
	apolloClose       = "--\r\n"
)

// wantsApolloMultipart reports whether r's Accept asks for multipart/mixed with a
// subscriptionSpec: Apollo's protocol, not incremental delivery.
func wantsApolloMultipart(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		if mt, params, err := mime.ParseMediaType(strings.TrimSpace(part)); err == nil && mt == "multipart/mixed" {
			return params["subscriptionspec"] != ""
		}
	}
	return false
}

func (t apolloMultipart) Supports(r *http.Request) bool {
	if r.Method != http.MethodPost || !wantsApolloMultipart(r) {
		return false
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return err == nil && mt == "application/json"
}

func (t apolloMultipart) Do(w http.ResponseWriter, r *http.Request, exec graphql.GraphExecutor) {
	ctx := r.Context()
	start := graphql.Now()
	params := &graphql.RawParams{}
	dec := json.NewDecoder(r.Body)
	dec.UseNumber()
	if err := dec.Decode(params); err != nil {
		msg := "json request body could not be decoded: " + err.Error()
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			msg = "request body is too large"
		}
		resp := exec.DispatchError(ctx, gqlerror.List{{Message: msg, Extensions: map[string]any{"code": CodeBadRequest}}})
		writePlainJSON(w, http.StatusBadRequest, resp)
		return
	}
	params.Headers = r.Header
	params.ReadTime = graphql.TraceTiming{Start: start, End: graphql.Now()}

	rc, errs := exec.CreateOperationContext(ctx, params)
	if errs != nil {
		resp := exec.DispatchError(graphql.WithOperationContext(ctx, rc), errs)
		writePlainJSON(w, http.StatusUnprocessableEntity, resp)
		return
	}
	ctx, cancel := context.WithCancel(graphql.WithOperationContext(ctx, rc))
	defer cancel()
	if rc.Operation == nil || rc.Operation.Operation != ast.Subscription {
		// One answer, as plain JSON (a @defer in it answers with its initial result only: deferred
		// queries belong on incremental delivery).
		responses, octx := exec.DispatchOperation(ctx, rc)
		writePlainJSON(w, http.StatusOK, responses(octx))
		return
	}
	t.stream(ctx, cancel, w, exec, rc)
}

// stream serves one subscription until its stream ends, the client goes, or the server stops.
func (t apolloMultipart) stream(ctx context.Context, cancel context.CancelFunc, w http.ResponseWriter, exec graphql.GraphExecutor, rc *graphql.OperationContext) {
	s := &apolloStream{w: w, ctl: http.NewResponseController(w), timeout: t.writeTimeout}
	defer s.shut() // after the heartbeat goroutine is told to stop (defers run in reverse)
	defer func() {
		if r := recover(); r != nil {
			err := rc.Recover(ctx, r)
			resp := exec.DispatchError(ctx, gqlerror.List{gqlerror.WrapIfUnwrapped(err)})
			s.part(map[string]any{"payload": nil, "errors": resp.Errors})
			s.write(apolloClose)
		}
	}()

	responses, ctx := exec.DispatchOperation(ctx, rc)
	h := w.Header()
	h.Set("Content-Type", apolloContentType)
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // proxies: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	if !s.write(apolloDelimiter) {
		return
	}

	// Heartbeats, and the end on Stopping, run beside the reader of events.
	beats := make(chan struct{})
	defer close(beats)
	go func() {
		tick := time.NewTicker(t.heartbeat)
		defer tick.Stop()
		for {
			select {
			case <-beats:
				return
			case <-tick.C:
				if !s.part(struct{}{}) {
					cancel()
					return
				}
			case <-t.stopping:
				cancel()
				return
			}
		}
	}()

	for {
		resp := responses(ctx)
		if shutDown(t.stopping) {
			return // no closing delimiter: the client reconnects
		}
		if resp == nil {
			s.write(apolloClose) // the stream ended: the post was deleted
			return
		}
		if fatal(resp) {
			s.part(map[string]any{"payload": nil, "errors": resp.Errors})
			s.write(apolloClose)
			return
		}
		if !s.part(map[string]any{"payload": resp}) {
			return
		}
	}
}

// fatal reports whether resp ends the stream for a transport reason rather than the operation's:
// the Hub dropped a subscriber that fell behind.
func fatal(resp *graphql.Response) bool {
	if resp.Data != nil || len(resp.Errors) == 0 {
		return false
	}
	for _, e := range resp.Errors {
		if e.Extensions["code"] == CodeTooSlow {
			return true
		}
	}
	return false
}

func shutDown(stopping <-chan struct{}) bool {
	select {
	case <-stopping:
		return true
	default:
		return false
	}
}

// apolloStream serialises the writes of one stream; after a failed write it writes nothing more.
type apolloStream struct {
	w       http.ResponseWriter
	ctl     *http.ResponseController
	timeout time.Duration

	mu     sync.Mutex
	broken bool
}

// part writes one JSON part with its delimiter, and flushes it.
func (s *apolloStream) part(v any) bool {
	b, err := json.Marshal(v)
	if err != nil {
		b = []byte(`{"payload":null,"errors":[{"message":"internal error","extensions":{"code":"INTERNAL_SERVER_ERROR"}}]}`)
	}
	return s.write(apolloPartHeader + string(b) + apolloDelimiter)
}

func (s *apolloStream) write(text string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.broken {
		return false
	}
	if s.timeout > 0 {
		_ = s.ctl.SetWriteDeadline(time.Now().Add(s.timeout))
	}
	if _, err := s.w.Write([]byte(text)); err != nil {
		s.broken = true
		return false
	}
	if err := s.ctl.Flush(); err != nil {
		s.broken = true
		return false
	}
	return true
}

// shut waits for a write in progress and refuses every later one: the handler is returning.
func (s *apolloStream) shut() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.broken = true
}

func writePlainJSON(w http.ResponseWriter, status int, resp *graphql.Response) {
	if resp == nil {
		resp = &graphql.Response{Errors: gqlerror.List{{Message: "no response", Extensions: map[string]any{"code": CodeInternal}}}}
	}
	b, _ := json.Marshal(resp)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
