package main

import (
	"io"
	"log/slog"
	"net/http"
	"time"
)

// edge holds the bounds serve puts on what one client may cost: connections, timeouts, rates.
type edge struct {
	connections   int
	headerTimeout time.Duration
	bodyTimeout   time.Duration
	idleTimeout   time.Duration
	mutationRate  float64 // per user per second; negative: off
	mutationBurst int
	subscriptions int
	waiters       int

	aliases, selectionFields, mutationFields, depth int
	answerBytes                                     int
	errors                                          int
	socketSubscriptions                             int
}

// edgeSettings reads and checks the edge's settings.
func edgeSettings(cfg *Config) (e edge, err error) {
	for _, v := range []struct {
		to   *time.Duration
		name string
	}{{&e.headerTimeout, "header-timeout"}, {&e.bodyTimeout, "body-timeout"}, {&e.idleTimeout, "idle-timeout"}} {
		if *v.to, err = cfg.timeout(v.name); err != nil {
			return e, err
		}
	}
	for _, v := range []struct {
		to   *int
		name string
	}{
		{&e.connections, "max-connections"}, {&e.mutationBurst, "mutation-burst"},
		{&e.subscriptions, "max-subscriptions"}, {&e.waiters, "max-waiters"},
		{&e.aliases, "max-aliases"}, {&e.selectionFields, "max-selection-fields"},
		{&e.mutationFields, "max-mutation-fields"}, {&e.depth, "max-depth"}, {&e.answerBytes, "max-answer"},
		{&e.errors, "max-errors"}, {&e.socketSubscriptions, "socket-subscriptions"},
	} {
		if *v.to, err = cfg.positive(v.name); err != nil {
			return e, err
		}
	}
	if e.mutationRate, err = cfg.float("mutation-rate"); err != nil {
		return e, err
	}
	if e.mutationRate == 0 {
		e.mutationRate = -1 // the flag's 0 means no limit; graph's zero means its default
	}
	return e, nil
}

// fitDescriptors lowers a connection cap to what the process's descriptor limit can hold beside
// the descriptors the stores, the broker and the Kafka clients need, so that the cap is reached
// before the process runs out of descriptors.
func fitDescriptors(want int, log *slog.Logger) int {
	limit, ok := descriptorLimit()
	if !ok {
		return want
	}
	reserve := 128 + limit/10
	fit := max(int(limit)-reserve, 16)
	if fit < want {
		log.Warn("connection cap lowered to fit the descriptor limit (raise it with ulimit -n)",
			"max_connections", fit, "asked", want, "descriptor_limit", limit)
		return fit
	}
	return want
}

// bodyDeadline gives a request that has a body d to send it; once the body is read the deadline
// is lifted, so that a streaming response (SSE) is not cut. Websocket upgrades and requests
// without a body are left alone: the header and idle timeouts bound those.
func bodyDeadline(d time.Duration, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 || r.Header.Get("Upgrade") != "" {
			next.ServeHTTP(w, r)
			return
		}
		rc := http.NewResponseController(w)
		if err := rc.SetReadDeadline(time.Now().Add(d)); err != nil {
			next.ServeHTTP(w, r)
			return
		}
		r.Body = &liftOnEOF{ReadCloser: r.Body, lift: func() { _ = rc.SetReadDeadline(time.Time{}) }}
		next.ServeHTTP(w, r)
	})
}

// liftOnEOF lifts a read deadline once its body has been read to the end.
type liftOnEOF struct {
	io.ReadCloser
	lift   func()
	lifted bool
}

func (b *liftOnEOF) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF && !b.lifted {
		b.lifted = true
		b.lift()
	}
	return n, err
}
