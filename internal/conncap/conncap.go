// Package conncap bounds the connections a server holds open, so that a flood of idle or stuck
// clients meets a clean refusal instead of exhausting the process's file descriptors (which also
// starves everything else the process opens: its databases, its Kafka clients).
package conncap

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// refusal is what a connection over the cap reads before the server closes it.
const refusal = "HTTP/1.1 503 Service Unavailable\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"Retry-After: 1\r\n" +
	"Connection: close\r\n" +
	"Content-Length: 26\r\n\r\n" +
	"too many open connections\n"

// maxRefusing bounds the refused connections being answered at once; beyond it a refused
// connection is closed without an answer, so refusing never costs more than a few descriptors.
const maxRefusing = 32

// Listener is a net.Listener that keeps at most Max connections open. A connection accepted over
// the cap gets a 503 response and is closed. Connections count until they are closed, hijacked
// ones (websockets) included.
type Listener struct {
	net.Listener
	max      int64
	open     atomic.Int64
	refusing atomic.Int64
	refused  func() // called for each refused connection (metrics); may be nil
}

// New wraps l so that at most limit connections are open at once (limit < 1 means 1). refused, when
// not nil, is called for every connection refused.
func New(l net.Listener, limit int, refused func()) *Listener {
	return &Listener{Listener: l, max: int64(max(limit, 1)), refused: refused}
}

// Open returns the number of connections open now.
func (l *Listener) Open() int { return int(l.open.Load()) }

// Accept returns the next connection under the cap, refusing those over it.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.open.Add(1) > l.max {
			l.open.Add(-1)
			l.refuse(c)
			continue
		}
		return &conn{Conn: c, l: l}, nil
	}
}

// refuse answers c with a 503 and closes it, in the background and bounded.
func (l *Listener) refuse(c net.Conn) {
	if l.refused != nil {
		l.refused()
	}
	if l.refusing.Add(1) > maxRefusing {
		l.refusing.Add(-1)
		_ = c.Close()
		return
	}
	go func() {
		defer l.refusing.Add(-1)
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(time.Second))
		if _, err := io.WriteString(c, refusal); err != nil {
			return
		}
		// Half-close and drain what the client sent, so that it reads the answer instead of a reset.
		if cw, ok := c.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(c, 64<<10))
	}()
}

type conn struct {
	net.Conn
	l    *Listener
	once sync.Once
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.open.Add(-1) })
	return err
}
