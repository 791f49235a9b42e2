// Command healthcheck probes postgate from inside its container. The image is distroless (no
// shell, no curl), so compose's health checks run this small static binary instead: it asks
// http://127.0.0.1:PORT/PATH, where PORT is the port of POSTGATE_ADDR (the address serve listens
// on, ":8080" by default), and exits 0 on a 200 answer, 1 otherwise.
//
// Usage: healthcheck [/readyz | /healthz]   (default /readyz)
package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"
)

func main() {
	path := "/readyz"
	if len(os.Args) > 1 {
		path = os.Args[1]
	}
	if err := probe(os.Getenv("POSTGATE_ADDR"), path); err != nil {
		fmt.Fprintln(os.Stderr, "healthcheck:", err)
		os.Exit(1)
	}
}

// probe asks the local postgate at listen address addr for path. It returns an error when the
// address cannot be parsed, the request fails or the answer is not 200.
func probe(addr, path string) error {
	url, err := probeURL(addr, path)
	if err != nil {
		return err
	}
	// Below compose's own health-check timeout, so that a hung server counts as a failed probe.
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("request %s: %w", url, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("get %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("get %s: %s", url, resp.Status)
	}
	return nil
}

// probeURL turns serve's listen address into the URL to probe. A wildcard or empty host becomes
// 127.0.0.1: the probe runs in the same network namespace as the server.
func probeURL(addr, path string) (string, error) {
	if addr == "" {
		addr = ":8080" // serve's default (config.go)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("POSTGATE_ADDR %q: %w", addr, err)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port) + path, nil
}
