// Package telemetry sets up OpenTelemetry tracing and carries trace context through Kafka headers.
//
// Tracing is off unless the standard OTEL_* variables ask for it: OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, or OTEL_TRACES_EXPORTER=otlp. The exporter is OTLP over
// HTTP/protobuf (what collectors, Jaeger and Tempo accept on :4318); it reads the rest of the
// OTEL_EXPORTER_OTLP_* and OTEL_BSP_* variables itself. OTEL_SDK_DISABLED=true and
// OTEL_TRACES_EXPORTER=none turn it off. When off, the global tracer provider is OpenTelemetry's
// no-op one, and every span below costs a function call.
package telemetry

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/IBM/sarama"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// Scope is the instrumentation scope of postgate's spans.
const Scope = "github.com/postgate/postgate"

// Tracer returns the tracer of postgate's spans, from the global provider (set by Setup).
func Tracer() trace.Tracer { return otel.Tracer(Scope) }

// propagator is W3C Trace Context: the traceparent and tracestate headers.
var propagator = propagation.TraceContext{}

// Propagator returns the propagator of trace context in HTTP and Kafka headers (W3C Trace Context).
func Propagator() propagation.TextMapPropagator { return propagator }

// Enabled reports whether the environment asks for traces.
func Enabled(getenv func(string) string) bool {
	if strings.EqualFold(getenv("OTEL_SDK_DISABLED"), "true") {
		return false
	}
	switch strings.ToLower(strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER"))) {
	case "none":
		return false
	case "otlp":
		return true
	}
	return getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// Setup installs the global tracer provider when the environment asks for traces,
// and returns what flushes and stops it (a no-op when tracing is off).
func Setup(ctx context.Context, version string) (shutdown func(context.Context) error, err error) {
	if !Enabled(os.Getenv) {
		return func(context.Context) error { return nil }, nil
	}
	for _, name := range []string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		if p := os.Getenv(name); p != "" {
			if !strings.EqualFold(p, "http/protobuf") {
				return nil, fmt.Errorf("%s %q: postgate exports traces over http/protobuf only", name, p)
			}
			break // the traces variable, when set, overrides the general one
		}
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, fmt.Errorf("OTLP trace exporter: %w", err)
	}
	// resource.Default reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; postgate is the
	// service name unless they say otherwise.
	res, err := resource.Merge(
		resource.NewWithAttributes(semconv.SchemaURL, semconv.ServiceName("postgate"), semconv.ServiceVersion(version)),
		resource.Default())
	if err != nil {
		res = resource.Default()
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	return tp.Shutdown, nil
}

// Inject adds the traceparent (and tracestate) of ctx's span to m's headers; nothing when ctx
// carries no valid span.
func Inject(ctx context.Context, m *sarama.ProducerMessage) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return
	}
	c := propagation.MapCarrier{}
	propagator.Inject(ctx, c)
	for _, k := range propagator.Fields() { // in a fixed order: traceparent, then tracestate
		if v, ok := c[k]; ok {
			m.Headers = append(m.Headers, sarama.RecordHeader{Key: []byte(k), Value: []byte(v)})
		}
	}
}

// InjectSpan is Inject for a span context held apart from a context.
func InjectSpan(sc trace.SpanContext, m *sarama.ProducerMessage) {
	if sc.IsValid() {
		Inject(trace.ContextWithSpanContext(context.Background(), sc), m)
	}
}

// Extract returns the remote span context carried by a consumed message's headers (invalid when
// there is none).
func Extract(m *sarama.ConsumerMessage) trace.SpanContext {
	var c propagation.MapCarrier
	for _, h := range m.Headers {
		if h == nil {
			continue
		}
		for _, k := range propagator.Fields() {
			if strings.EqualFold(string(h.Key), k) {
				if c == nil {
					c = propagation.MapCarrier{}
				}
				c[k] = string(h.Value)
			}
		}
	}
	if c == nil {
		return trace.SpanContext{} // the common case when nothing traces: no allocation
	}
	return trace.SpanContextFromContext(propagator.Extract(context.Background(), c))
}
