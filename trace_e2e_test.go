package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// TestTraceOfALike: with tracing on, one likePost forms one trace from the GraphQL mutation
// through the event store append, the Kafka publish, the projector's apply and the push to a
// likeCount subscriber, continuing the caller's traceparent.
func TestTraceOfALike(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	otel.SetTracerProvider(tp)
	t.Cleanup(func() { otel.SetTracerProvider(noop.NewTracerProvider()) })

	s := startServe(t)
	ctx := testDeadline(t, 30*time.Second)
	alice := s.token("alice")
	p := s.createPost(alice, "traced")
	ws, err := s.dialWS(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	ws.subscribe(ctx, "1", `subscription($id: ID!) { likeCount(postId: $id) { likes version } }`, map[string]any{"id": p.ID})

	const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	eventually(t, 10*time.Second, "a like pushed to the subscriber", func() error {
		body, _ := json.Marshal(map[string]any{"query": `mutation($id: ID!) { likePost(id: $id) { likes } }`,
			"variables": map[string]any{"id": p.ID}})
		req, err := http.NewRequest(http.MethodPost, s.url+"/graphql", bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+alice)
		req.Header.Set("traceparent", parent)
		if r := s.send(req); len(r.Errors) > 0 {
			return fmt.Errorf("likePost: %v", r.Errors)
		}
		rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		if _, err := ws.read(rctx); err != nil {
			return err
		}
		return nil
	})
	want := []string{"mutation", "eventstore.append", "kafka.publish", "projector.apply", "subscription.push"}
	eventually(t, 10*time.Second, "the spans of the like in one trace", func() error {
		byName := map[string]trace.SpanContext{}
		for _, sp := range rec.Ended() {
			if sp.SpanContext().TraceID().String() == "4bf92f3577b34da6a3ce929d0e0e4736" {
				byName[sp.Name()] = sp.SpanContext()
			}
		}
		for _, n := range want {
			if _, ok := byName[n]; !ok {
				return fmt.Errorf("no %q span in the caller's trace; have %v", n, keys(byName))
			}
		}
		return nil
	})
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
