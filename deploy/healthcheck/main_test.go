package main

import (
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestProbeURL(t *testing.T) {
	for _, tc := range []struct {
		name, addr, want string
	}{
		{"unset means serve's default port", "", "http://127.0.0.1:8080/readyz"},
		{"wildcard host is probed on loopback", ":9090", "http://127.0.0.1:9090/readyz"},
		{"all IPv4 interfaces are probed on loopback", "0.0.0.0:8081", "http://127.0.0.1:8081/readyz"},
		{"a named host is kept", "10.0.0.7:8080", "http://10.0.0.7:8080/readyz"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := probeURL(tc.addr, "/readyz")
			if err != nil || got != tc.want {
				t.Fatalf("probeURL(%q) = %q, %v; want %q", tc.addr, got, err, tc.want)
			}
		})
	}
	if _, err := probeURL("8080", "/readyz"); err == nil {
		t.Fatal("an address without a colon was accepted")
	}
}

func TestProbe(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	if err := probe(":"+port, "/readyz"); err != nil {
		t.Fatalf("probe of a ready server: %v", err)
	}
	if err := probe(":"+port, "/healthz"); err == nil {
		t.Fatal("probe accepted a 503")
	}
}
