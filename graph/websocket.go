package graph

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/coder/websocket"
	"github.com/vektah/gqlparser/v2/gqlerror"
)

// The two subprotocols served on /graphql.
const (
	// subprotocolTransportWS is the graphql-ws library's protocol
	// (https://github.com/enisdenjo/graphql-ws/blob/master/PROTOCOL.md).
	subprotocolTransportWS = "graphql-transport-ws"
	// subprotocolLegacyWS is subscriptions-transport-ws's protocol, still spoken by older Apollo
	// clients. A client that offers no subprotocol is served with it, as gqlgen did.
	subprotocolLegacyWS = "graphql-ws"
)

// The close codes of graphql-transport-ws; the legacy protocol defines none, and gets the same.
const (
	closeBadRequest      websocket.StatusCode = 4400
	closeUnauthorized    websocket.StatusCode = 4401
	closeForbidden       websocket.StatusCode = 4403
	closeInitTimeout     websocket.StatusCode = 4408
	closeSubscriberInUse websocket.StatusCode = 4409
	closeTooManyInits    websocket.StatusCode = 4429
	// closeServiceRestart is the standard "service restart" (1012): graphql-ws clients treat it
	// as temporary and reconnect, unlike the 4xxx codes above.
	closeServiceRestart websocket.StatusCode = 1012
)

// websocketTransport is postgate's GraphQL-over-websocket transport, replacing gqlgen's
// transport.Websocket: it closes every connection it is done with (gqlgen's returned from a
// failed init without closing, leaving sockets in CLOSE-WAIT), speaks the close codes of
// graphql-transport-ws, bounds the operations of one socket, and closes every socket with 1012
// and no "complete" when the server stops.
//
// Operations go through the executor exactly as in gqlgen's transport (CreateOperationContext,
// DispatchOperation, DispatchError), so every extension, middleware, error presenter and recover
// function applies.
//
// Budget of one connection: the handler's own goroutine, which is its only reader; one goroutine
// per active operation (gqlgen's ResponseHandler blocks until the next event), at most
// maxOps of them; three runtime timers (init timeout, token expiry, keep-alive), which cost no
// goroutine while they wait; coder/websocket's read and write buffers; and the small state below.
// No goroutine runs per connection for pings or for watching contexts.
type websocketTransport struct {
	tokens       *tokenVerifier
	accept       websocket.AcceptOptions
	readLimit    int64
	initTimeout  time.Duration
	writeTimeout time.Duration
	pingInterval time.Duration
	maxOps       int
	stopping     <-chan struct{}
	logger       *slog.Logger
	metrics      *Metrics

	watchOnce sync.Once
	mu        sync.Mutex // guards conns and stopped
	conns     map[*wsConn]struct{}
	stopped   bool
}

var _ graphql.Transport = (*websocketTransport)(nil)

func newWebsocketTransport(cfg ServerConfig, tokens *tokenVerifier) *websocketTransport {
	return &websocketTransport{
		tokens: tokens,
		accept: websocket.AcceptOptions{
			Subprotocols:   []string{subprotocolTransportWS, subprotocolLegacyWS},
			OriginPatterns: originPatterns(cfg.AllowedOrigins),
		},
		readLimit:    cfg.MaxBodyBytes,
		initTimeout:  cfg.WebsocketInitTimeout,
		writeTimeout: cfg.WebsocketWriteTimeout,
		pingInterval: cfg.PingInterval,
		maxOps:       cfg.MaxSubscriptionsPerSocket,
		stopping:     cfg.Stopping,
		logger:       cfg.Logger,
		metrics:      cfg.Metrics,
		conns:        map[*wsConn]struct{}{},
	}
}

// Supports reports whether r asks for a websocket upgrade.
func (t *websocketTransport) Supports(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
}

// Do upgrades r and serves the connection until either side is done with it. It returns only
// after the connection is closed.
func (t *websocketTransport) Do(w http.ResponseWriter, r *http.Request, exec graphql.GraphExecutor) {
	ws, err := websocket.Accept(w, r, &t.accept)
	if err != nil {
		return // Accept has answered with an error status (a bad origin, not an upgrade)
	}
	defer ws.CloseNow()
	ws.SetReadLimit(t.readLimit)

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	c := &wsConn{
		t:       t,
		ws:      ws,
		exec:    exec,
		headers: r.Header,
		legacy:  ws.Subprotocol() != subprotocolTransportWS,
		ctx:     ctx,
		ops:     map[string]*wsOperation{},
	}
	c.lastRead.Store(time.Now().UnixNano())
	if !t.register(c) {
		c.close(closeServiceRestart, "service restart")
		return
	}
	defer t.unregister(c)
	// The server's base context ending (a shutdown that did not close Stopping) ends the socket,
	// not only its operations, which would otherwise look finished to the client: with 1012 too,
	// so that the client reconnects.
	defer context.AfterFunc(r.Context(), func() { c.close(closeServiceRestart, "service restart") })()
	c.mu.Lock()
	c.initTimer = time.AfterFunc(t.initTimeout, func() {
		c.mu.Lock()
		late := !c.initDone
		c.mu.Unlock()
		if late {
			c.close(closeInitTimeout, "Connection initialisation timeout")
		}
	})
	c.mu.Unlock()
	c.serve()
}

// register adds c to the sockets that a shutdown closes; false when the shutdown has begun.
func (t *websocketTransport) register(c *wsConn) bool {
	if t.stopping != nil {
		// One goroutine per server, not per connection, waits for the shutdown.
		t.watchOnce.Do(func() { go t.watchStopping() })
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return false
	}
	t.conns[c] = struct{}{}
	return true
}

func (t *websocketTransport) unregister(c *wsConn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.conns, c)
}

// watchStopping closes every socket with 1012 once Stopping closes. The closes run in parallel:
// each waits (boundedly) for its peer's close frame.
func (t *websocketTransport) watchStopping() {
	<-t.stopping
	t.mu.Lock()
	t.stopped = true
	conns := make([]*wsConn, 0, len(t.conns))
	for c := range t.conns {
		conns = append(conns, c)
	}
	t.mu.Unlock()
	for _, c := range conns {
		go c.close(closeServiceRestart, "service restart")
	}
}

// shuttingDown reports whether Stopping has closed.
func (t *websocketTransport) shuttingDown() bool {
	select {
	case <-t.stopping:
		return true
	default:
		return false
	}
}

// wsConn is one websocket connection.
type wsConn struct {
	t       *websocketTransport
	ws      *websocket.Conn
	exec    graphql.GraphExecutor
	headers http.Header
	legacy  bool

	lastRead atomic.Int64 // unix nanoseconds of the last message read, for the keep-alive check

	// Set by the reader before any operation starts, then only read.
	ctx   context.Context // the connection's context, with the identity from connection_init
	acked bool

	// mu guards the fields below and serialises writes: an operation's message is written only
	// while the operation is still registered, so that nothing is sent for an id after the
	// client stopped it (and possibly reused the id).
	mu                                sync.Mutex
	initDone                          bool
	closing                           bool // no more writes: set by close and by a failed write
	torn                              bool // close has ended the operations and timers
	ops                               map[string]*wsOperation
	initTimer, expiryTimer, pingTimer *time.Timer
	pingAt                            time.Time // the first ping sent after the last read
}

// wsOperation is one active operation of a connection.
type wsOperation struct {
	id     string
	cancel context.CancelFunc
	ended  bool // guarded by wsConn.mu: stopped by the client, or finished
}

// wsMessage is a message of either subprotocol.
type wsFrame struct {
	ID      *string         `json:"id,omitempty"`
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

// serve is the connection's reader loop, on the handler's goroutine. It returns when the
// connection is done, having closed it.
func (c *wsConn) serve() {
	for {
		start := graphql.Now()
		_, data, err := c.ws.Read(context.Background()) // closing the connection ends a blocked Read
		if err != nil {
			c.close(websocket.StatusNormalClosure, "") // a no-op when the peer or a timer closed it
			return
		}
		c.lastRead.Store(time.Now().UnixNano())
		var m wsFrame
		if err := json.Unmarshal(data, &m); err != nil {
			c.close(closeBadRequest, "Invalid message received")
			return
		}
		if !c.handle(start, m) {
			return
		}
	}
}

// handle acts on one client message; false when the connection is closed.
func (c *wsConn) handle(start time.Time, m wsFrame) bool {
	switch {
	case m.Type == "connection_init":
		return c.init(m.Payload)
	case m.Type == "ping" && !c.legacy:
		c.write(wsFrame{Type: "pong", Payload: m.Payload})
		return true
	case m.Type == "pong" && !c.legacy:
		return true // lastRead is all a pong is for
	case m.Type == "subscribe" && !c.legacy, m.Type == "start" && c.legacy:
		return c.subscribe(start, m)
	case m.Type == "complete" && !c.legacy, m.Type == "stop" && c.legacy:
		if m.ID == nil {
			c.close(closeBadRequest, "Invalid message received")
			return false
		}
		c.stop(*m.ID)
		return true
	case m.Type == "connection_terminate" && c.legacy:
		c.close(websocket.StatusNormalClosure, "terminated")
		return false
	default:
		c.close(closeBadRequest, "Invalid message received")
		return false
	}
}

// init handles connection_init: a second one, a payload that is not an object, and a bad token
// each close the connection; otherwise the identity becomes the connection's and is acknowledged.
func (c *wsConn) init(payload json.RawMessage) bool {
	c.mu.Lock()
	again := c.initDone
	c.initDone = true
	c.mu.Unlock()
	if again {
		c.close(closeTooManyInits, "Too many initialisation requests")
		return false
	}
	c.mu.Lock()
	c.initTimer.Stop()
	c.mu.Unlock()
	var p transport.InitPayload
	if !isAbsent(payload) {
		if !isObject(payload) || json.Unmarshal(payload, &p) != nil {
			c.close(closeBadRequest, "Invalid message received: connection_init payload is not an object")
			return false
		}
	}
	id := c.t.tokens.identify(p.Authorization(), "websocket")
	if id.bad != nil {
		// A 4403 is final for graphql-ws clients: they do not reconnect in a loop with a bad token.
		if c.legacy {
			c.write(wsFrame{Type: "connection_error", Payload: mustJSON(&gqlerror.Error{Message: "forbidden: " + refusal(id.bad)})})
		}
		c.close(closeForbidden, "Forbidden: "+refusal(id.bad))
		return false
	}
	c.ctx = withIdentity(c.ctx, id)
	if !id.expires.IsZero() {
		// A socket outlives its token only until the token's expiry, with the same leeway that
		// verification grants: then it is closed, and its subscriptions end with it.
		c.mu.Lock()
		if !c.closing {
			c.expiryTimer = time.AfterFunc(time.Until(id.expires.Add(tokenLeeway)), func() {
				c.close(closeForbidden, "Forbidden: token expired")
			})
		}
		c.mu.Unlock()
	}
	c.acked = true
	c.write(wsFrame{Type: "connection_ack"})
	if c.legacy {
		c.write(wsFrame{Type: "ka"})
	}
	c.mu.Lock()
	if !c.closing {
		c.pingTimer = time.AfterFunc(c.t.pingInterval, c.keepAlive)
	}
	c.mu.Unlock()
	return true
}

// keepAlive runs every ping interval on a timer. graphql-transport-ws gets a ping, and a
// connection from which nothing was read within two intervals of a ping is closed. The legacy
// protocol has no answer to its "ka", so the websocket's own ping frame checks the peer.
func (c *wsConn) keepAlive() {
	now := time.Now()
	interval := c.t.pingInterval
	if c.legacy {
		c.write(wsFrame{Type: "ka"})
		ctx, cancel := context.WithTimeout(context.Background(), 2*interval)
		err := c.ws.Ping(ctx)
		cancel()
		if err != nil {
			c.close(websocket.StatusGoingAway, "keep-alive timeout")
			return
		}
	} else {
		lastRead := time.Unix(0, c.lastRead.Load())
		c.mu.Lock()
		dead := !c.pingAt.IsZero() && lastRead.Before(c.pingAt) && now.Sub(c.pingAt) >= 2*interval
		if c.pingAt.IsZero() || !lastRead.Before(c.pingAt) {
			c.pingAt = now
		}
		c.mu.Unlock()
		if dead {
			c.close(websocket.StatusGoingAway, "keep-alive timeout")
			return
		}
		c.write(wsFrame{Type: "ping"})
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closing {
		c.pingTimer.Reset(interval)
	}
}

// subscribe starts an operation. Before connection_ack it is a 4401, an id in use a 4409 (the
// legacy protocol replaces the running operation instead, as its server did), and over the
// limit of the socket an error for that id alone.
func (c *wsConn) subscribe(start time.Time, m wsFrame) bool {
	if !c.acked {
		c.close(closeUnauthorized, "Unauthorized")
		return false
	}
	if m.ID == nil || *m.ID == "" || !isObject(m.Payload) {
		c.close(closeBadRequest, "Invalid message received")
		return false
	}
	id := *m.ID
	params := &graphql.RawParams{}
	dec := json.NewDecoder(bytes.NewReader(m.Payload))
	dec.UseNumber()
	if err := dec.Decode(params); err != nil {
		c.close(closeBadRequest, "Invalid message received: subscribe payload")
		return false
	}

	c.mu.Lock()
	if _, dup := c.ops[id]; dup {
		if !c.legacy {
			c.mu.Unlock()
			c.close(closeSubscriberInUse, truncateReason("Subscriber for "+id+" already exists"))
			return false
		}
		c.endLocked(id)
	}
	full := len(c.ops) >= c.t.maxOps
	c.mu.Unlock()
	if full {
		c.t.metrics.countError(CodeLimitExceeded)
		c.writeError(id, gqlerror.List{{
			Message:    fmt.Sprintf("too many subscriptions on one websocket (at most %d)", c.t.maxOps),
			Extensions: map[string]any{"code": CodeLimitExceeded},
		}})
		return true
	}

	params.ReadTime = graphql.TraceTiming{Start: start, End: graphql.Now()}
	params.Headers = c.headers
	ctx := graphql.StartOperationTrace(c.ctx)
	rc, errs := c.exec.CreateOperationContext(ctx, params)
	if errs != nil {
		// Parse, validation and limit errors: the operation never starts and its id is free.
		resp := c.exec.DispatchError(graphql.WithOperationContext(ctx, rc), errs)
		c.writeError(id, resp.Errors)
		return true
	}
	ctx, cancel := context.WithCancel(graphql.WithOperationContext(ctx, rc))
	op := &wsOperation{id: id, cancel: cancel}
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		cancel()
		return false
	}
	c.ops[id] = op
	c.mu.Unlock()
	go c.run(ctx, rc, op)
	return true
}

// run executes one operation, sending each result, until its stream ends or it is cancelled.
func (c *wsConn) run(ctx context.Context, rc *graphql.OperationContext, op *wsOperation) {
	defer op.cancel()
	defer func() {
		if r := recover(); r != nil {
			err := rc.Recover(ctx, r)
			resp := c.exec.DispatchError(ctx, gqlerror.List{gqlerror.WrapIfUnwrapped(err)})
			c.send(op, "error", mustJSON(resp.Errors))
		}
		c.finish(op)
	}()
	responses, ctx := c.exec.DispatchOperation(ctx, rc)
	for {
		resp := responses(ctx)
		if resp == nil {
			return
		}
		typ := "next"
		if c.legacy {
			typ = "data"
		}
		if !c.send(op, typ, mustJSON(resp)) {
			return
		}
	}
}

// finish ends an operation whose stream has ended. Only a stream that ended by itself (its post
// was deleted, the Hub dropped it) is completed: an operation that the client stopped, or that
// ends because the connection or the server does, gets nothing, so that clients reconnect and
// resubscribe rather than take it for finished.
func (c *wsConn) finish(op *wsOperation) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if op.ended {
		return
	}
	op.ended = true
	delete(c.ops, op.id)
	if c.closing || c.ctx.Err() != nil || c.t.shuttingDown() {
		return
	}
	c.writeLocked(wsFrame{ID: &op.id, Type: "complete"})
}

// stop cancels the operation id at the client's request; an unknown id is ignored. The id is
// free at once. graphql-transport-ws sends nothing back; the legacy protocol's server answered
// "complete".
func (c *wsConn) stop(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.endLocked(id) && c.legacy {
		c.writeLocked(wsFrame{ID: &id, Type: "complete"})
	}
}

// endLocked unregisters and cancels operation id, reporting whether it was active.
func (c *wsConn) endLocked(id string) bool {
	op, ok := c.ops[id]
	if !ok {
		return false
	}
	op.ended = true
	delete(c.ops, id)
	op.cancel()
	return true
}

// send writes one message of op unless op has ended; false when it has, or the write failed.
func (c *wsConn) send(op *wsOperation, typ string, payload json.RawMessage) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if op.ended || c.closing {
		return false
	}
	return c.writeLocked(wsFrame{ID: &op.id, Type: typ, Payload: payload})
}

// writeError sends a request error for id, which was never registered.
func (c *wsConn) writeError(id string, errs gqlerror.List) {
	c.write(wsFrame{ID: &id, Type: "error", Payload: mustJSON(errs)})
}

func (c *wsConn) write(m wsFrame) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return false
	}
	return c.writeLocked(m)
}

// writeLocked writes m within the write timeout. A write that fails or times out (a client that
// stopped reading) leaves the connection closed: coder/websocket closes it when the write's
// context expires, and CloseNow covers every other failure.
func (c *wsConn) writeLocked(m wsFrame) bool {
	ctx, cancel := context.WithTimeout(context.Background(), c.t.writeTimeout)
	defer cancel()
	if err := c.ws.Write(ctx, websocket.MessageText, mustJSON(m)); err != nil {
		c.closing = true
		c.ws.CloseNow()
		return false
	}
	return true
}

// close closes the connection with code and reason, ending its operations and timers; only the
// first call has an effect. It may run on any goroutine (the reader, a timer, the shutdown).
func (c *wsConn) close(code websocket.StatusCode, reason string) {
	c.mu.Lock()
	first := !c.torn
	c.torn, c.closing = true, true
	if first {
		for id := range c.ops {
			c.endLocked(id)
		}
		for _, t := range []*time.Timer{c.initTimer, c.expiryTimer, c.pingTimer} {
			if t != nil {
				t.Stop() // a pending timer would keep the connection in memory until it fires
			}
		}
	}
	c.mu.Unlock()
	if first && (code != websocket.StatusNormalClosure || reason != "") {
		// Close waits (at most about 10 s) for the peer's close frame before closing the TCP
		// connection; it returns at once when a failed write already closed it.
		_ = c.ws.Close(code, reason)
	}
	// The peer went away or closed first (there is no one to tell), or a handshake failed:
	// CloseNow makes sure the socket is gone, and waits for a close in progress.
	c.ws.CloseNow()
}

func isAbsent(raw json.RawMessage) bool {
	b := bytes.TrimSpace(raw)
	return len(b) == 0 || string(b) == "null"
}

func isObject(raw json.RawMessage) bool {
	b := bytes.TrimSpace(raw)
	return len(b) > 0 && b[0] == '{'
}

// truncateReason keeps a close reason within the 123 bytes a close frame allows.
func truncateReason(s string) string {
	for len(s) > 123 || !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		// Every value marshalled here is built by this file or by gqlgen from JSON values.
		panic(fmt.Sprintf("websocket: marshal %T: %v", v, err))
	}
	return b
}
