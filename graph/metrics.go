package graph

import (
	"context"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vektah/gqlparser/v2/ast"
)

// Metrics are the GraphQL layer's Prometheus metrics. A nil *Metrics records nothing.
type Metrics struct {
	requests    *prometheus.CounterVec
	errors      *prometheus.CounterVec
	mutations   *prometheus.HistogramVec
	subscribers *prometheus.GaugeVec
	dropped     prometheus.Counter
	limited     prometheus.Counter
}

// NewMetrics creates the metrics and registers them on reg. Errors: a registration conflict.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postgate_graphql_operations_total",
			Help: "GraphQL operations started, by type (query, mutation, subscription).",
		}, []string{"type"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postgate_graphql_errors_total",
			Help: "GraphQL errors sent to clients, by extensions.code.",
		}, []string{"code"}),
		mutations: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "postgate_graphql_mutation_seconds",
			Help:    "Latency of mutation root fields.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}, []string{"field"}),
		subscribers: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "postgate_graphql_subscribers",
			Help: "Live subscriptions, by field.",
		}, []string{"field"}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "postgate_graphql_subscribers_dropped_total",
			Help: "Subscriptions ended because their buffer overflowed (a client too slow to keep up).",
		}),
		limited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "postgate_graphql_rate_limited_total",
			Help: "Operations refused with RATE_LIMITED (a user over the mutation rate).",
		}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.errors, m.mutations, m.subscribers, m.dropped, m.limited} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *Metrics) countError(code string) {
	if m != nil {
		m.errors.WithLabelValues(code).Inc()
	}
}

func (m *Metrics) subscribed(field string, delta float64) {
	if m != nil {
		m.subscribers.WithLabelValues(field).Add(delta)
	}
}

func (m *Metrics) rateLimited() {
	if m != nil {
		m.limited.Inc()
	}
}

func (m *Metrics) droppedOne() {
	if m != nil {
		m.dropped.Inc()
	}
}

// aroundOperations counts operations by type.
func (m *Metrics) aroundOperations(ctx context.Context, next graphql.OperationHandler) graphql.ResponseHandler {
	if m != nil {
		if oc := graphql.GetOperationContext(ctx); oc != nil && oc.Operation != nil {
			m.requests.WithLabelValues(string(oc.Operation.Operation)).Inc()
		}
	}
	return next(ctx)
}

// aroundRootFields times mutation root fields.
func (m *Metrics) aroundRootFields(ctx context.Context, next graphql.RootResolver) graphql.Marshaler {
	if m == nil {
		return next(ctx)
	}
	oc := graphql.GetOperationContext(ctx)
	if oc == nil || oc.Operation == nil || oc.Operation.Operation != ast.Mutation {
		return next(ctx)
	}
	start := time.Now()
	res := next(ctx)
	m.mutations.WithLabelValues(graphql.GetRootFieldContext(ctx).Field.Name).Observe(time.Since(start).Seconds())
	return res
}
