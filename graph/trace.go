package graph

import (
	"context"
	"net/http"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/postgate/postgate/internal/telemetry"
	"github.com/postgate/postgate/read"
)

// Tracing (off unless OTEL_* asks for it, see internal/telemetry): a query or mutation is one
// server span, a child of the caller's traceparent header when it sends one; the event store
// append and the Kafka publish are its children; the projector's apply continues the trace from
// the message's headers, and the push to this gateway's subscribers from the change.

// traceContext continues the caller's trace (W3C traceparent) in the request's context.
func traceContext(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("traceparent") != "" {
			r = r.WithContext(telemetry.Propagator().Extract(r.Context(), propagation.HeaderCarrier(r.Header)))
		}
		next.ServeHTTP(w, r)
	})
}

// traceOperations wraps each query and mutation in a span named after its type and name, as
// OpenTelemetry's GraphQL conventions name it. A subscription lives as long as its stream: its
// pushes are traced per change instead (pushSpan).
func traceOperations(ctx context.Context, next graphql.OperationHandler) graphql.ResponseHandler {
	oc := graphql.GetOperationContext(ctx)
	if oc == nil || oc.Operation == nil || oc.Operation.Operation == ast.Subscription {
		return next(ctx)
	}
	op := string(oc.Operation.Operation)
	name := op
	if oc.OperationName != "" {
		name += " " + oc.OperationName
	}
	ctx, span := telemetry.Tracer().Start(ctx, name, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("graphql.operation.type", op),
			attribute.String("graphql.operation.name", oc.OperationName)))
	if !span.IsRecording() {
		return next(ctx)
	}
	h := next(ctx)
	ended := false
	return func(ctx context.Context) *graphql.Response {
		resp := h(ctx)
		if !ended { // a deferred response comes in parts: the first ends the span
			ended = true
			if resp != nil && len(resp.Errors) > 0 {
				span.SetStatus(codes.Error, resp.Errors[0].Message)
			}
			span.End()
		}
		return resp
	}
}

// pushSpan starts the span of delivering change c to this gateway's subscribers, in the trace
// of the projection that made it; a no-op span when c was not traced.
func pushSpan(c read.Change) trace.Span {
	if !c.Trace.IsValid() {
		return trace.SpanFromContext(context.Background())
	}
	_, span := telemetry.Tracer().Start(trace.ContextWithRemoteSpanContext(context.Background(), c.Trace),
		"subscription.push", trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithAttributes(attribute.String("postgate.post.id", c.PostID),
			attribute.Bool("postgate.likes_change", c.LikesChange)))
	return span
}
