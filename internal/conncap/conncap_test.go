package conncap

import (
	"bufio"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestConnectionsOverTheCapAreRefusedCleanly(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := make(chan struct{}, 16)
	l := New(raw, 3, func() { refused <- struct{}{} })
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	// Three idle clients hold every slot.
	var held []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", raw.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	waitFor(t, func() bool { return l.Open() == 3 })

	// The fourth is answered 503, not left hanging and not reset.
	c, err := net.Dial("tcp", raw.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("refused connection: %v", err)
	}
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("refused connection got %d (Retry-After %q), want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	select {
	case <-refused:
	case <-time.After(5 * time.Second):
		t.Fatal("refusal not reported")
	}

	// Closing a held connection frees its slot: the next client is served.
	held[0].Close()
	waitFor(t, func() bool { return l.Open() == 2 })
	resp2, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + raw.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer resp2.Body.Close()
	buf := new(strings.Builder)
	bufio.NewReader(resp2.Body).WriteTo(buf)
	if resp2.StatusCode != 200 || buf.String() != "ok" {
		t.Fatalf("after a slot freed: %d %q", resp2.StatusCode, buf.String())
	}
	for _, c := range held[1:] {
		c.Close()
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
