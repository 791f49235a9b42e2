// Package graph is postgate's GraphQL edge: the schema, its resolvers, subscriptions fed by the
// projector's change notifications, authentication, and the HTTP/websocket server with its limits.
package graph

//go:generate go tool gqlgen generate
//go:generate go run ./internal/gensum

import (
	"log/slog"

	"github.com/postgate/postgate/read"
	"github.com/postgate/postgate/write"
)

// Resolver is the one place the GraphQL layer's dependencies are injected. Commands, Reads and
// Changes are required; Logger and Metrics are optional.
type Resolver struct {
	// Commands runs every mutation.
	Commands *write.Handler
	// Reads answers every query and subscription.
	Reads read.Queries
	// Changes fans the projector's committed changes out to subscribers.
	Changes *Hub
	// Logger receives internal errors (their causes are never sent to clients). Nil discards them.
	Logger *slog.Logger
}
