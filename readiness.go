package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/postgate/postgate/read"
	"github.com/postgate/postgate/write"
	"github.com/postgate/postgate/write/kafka"
)

// readinessTTL is how long a verdict of /readyz stands. Every check writes to the event store, so
// a flood of probes must not become a flood of writes; a second is still quick to notice a change.
const readinessTTL = time.Second

// readiness answers /readyz: the event store takes a write, the read model answers a read, Kafka
// answers, and the identity provider's key set (when configured) is not stale. It checks at most once per readinessTTL, whatever the number of probes, and logs the
// reason at warn once each time it changes, not on every probe.
type readiness struct {
	store   write.EventStore
	model   read.Model
	brokers []string
	jwks    interface{ Problem() string } // nil: no identity provider
	log     *slog.Logger
	now     func() time.Time

	mu      sync.Mutex // held during a check, so that concurrent probes wait for one verdict
	checked time.Time
	reason  string // "" when ready; plain words safe to show to anyone who can reach /readyz
}

// check returns the current reason for not being ready, "" when ready.
func (r *readiness) check(ctx context.Context) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.checked.IsZero() && r.now().Sub(r.checked) < readinessTTL {
		return r.reason
	}
	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	reason, err := r.probe(pctx)
	if ctx.Err() != nil {
		// The prober went away: that says nothing about the dependencies.
		return reason
	}
	switch {
	case reason != r.reason && reason != "":
		r.log.Warn("not ready", "reason", reason, "err", err)
	case reason != r.reason:
		r.log.Info("ready again")
	}
	r.checked, r.reason = r.now(), reason
	return reason
}

// probe checks every dependency in turn and returns the reason of the first that fails, with its
// error for the log.
func (r *readiness) probe(ctx context.Context) (string, error) {
	if err := r.store.CheckWrite(ctx); err != nil {
		return "event store: cannot write: " + write.WriteProblem(err), err
	}
	if err := r.model.Ping(ctx); err != nil {
		return "read model: not answering", err
	}
	if err := kafka.Ping(ctx, r.brokers); err != nil {
		return "kafka: not answering", err
	}
	if r.jwks != nil {
		// Cached keys still verify tokens, but a provider unreachable past the cache lifetime
		// may have rotated or revoked them: this gateway can no longer say it is current.
		if p := r.jwks.Problem(); p != "" {
			return p, nil
		}
	}
	return "", nil
}

// ServeHTTP answers 200 "ready" or 503 with the reason.
func (r *readiness) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if reason := r.check(req.Context()); reason != "" {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "not ready: "+reason)
		return
	}
	fmt.Fprintln(w, "ready")
}
