package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The real clients in clients/ (Apollo Client 4, the graphql-ws client, GraphiQL in headless
// Chromium) run with Node.js against the whole binary. They need node, npm and Debian's chromium;
// .ci/install provides them, and a missing one fails the test with the command that installs it.

const clientsDir = "clients"

func TestClients(t *testing.T) {
	node := requireTool(t, "node", "Node.js 20+ with npm (Debian: apt-get install -y nodejs npm), or run .ci/install")
	chromium := os.Getenv("CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	if _, err := os.Stat(chromium); err != nil {
		t.Fatalf("%s is missing: GraphiQL is tested in Debian's Chromium. Install it with "+
			"`apt-get update && apt-get install -y --no-install-recommends chromium` (or run .ci/install): %v", chromium, err)
	}
	npmCI(t)

	s := startServe(t)
	var tokens []string
	for _, u := range []string{"ada", "brian", "cleo", "dmitri", "ezra"} {
		tokens = append(tokens, s.token(u))
	}
	scripts := []struct {
		name   string
		tokens []string
	}{
		{"apollo.mjs", tokens},
		{"apollo-multipart.mjs", tokens},
		{"graphqlws.mjs", tokens[:1]},
		{"graphiql.mjs", tokens[:1]},
	}
	for _, sc := range scripts {
		t.Run(sc.name, func(t *testing.T) {
			out, err := runNode(t, node, 2*time.Minute, append([]string{sc.name, s.url}, sc.tokens...), "CHROMIUM="+chromium)
			if err != nil {
				t.Fatalf("node %s: %v\n%s", sc.name, err, out)
			}
			t.Logf("%s", strings.TrimSpace(out))
		})
	}
}

// requireTool returns the path of a command, failing the test with how to install it.
func requireTool(tb testing.TB, name, install string) string {
	tb.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		tb.Fatalf("%s is not installed; the client tests need it. Install %s", name, install)
	}
	return p
}

// npmCI installs clients/node_modules from package-lock.json when it is missing or older than the
// lock file, as .ci/install does. The npm registry is reachable from the machines and CI.
func npmCI(tb testing.TB) {
	tb.Helper()
	lock, err := os.Stat(filepath.Join(clientsDir, "package-lock.json"))
	if err != nil {
		tb.Fatalf("clients/package-lock.json: %v", err)
	}
	// npm writes this hidden lock file last, so its presence means a finished install.
	installed, err := os.Stat(filepath.Join(clientsDir, "node_modules", ".package-lock.json"))
	if err == nil && !installed.ModTime().Before(lock.ModTime()) {
		return
	}
	npm := requireTool(tb, "npm", "npm 10+ (Debian: apt-get install -y npm), or run .ci/install")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund")
	cmd.Dir = clientsDir
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("npm ci in clients/: %v\n%s", err, out)
	}
}

// runNode runs node with args in clients/, returning its combined output. The scripts have their
// own watchdogs; limit is a last resort.
func runNode(tb testing.TB, node string, limit time.Duration, args []string, env ...string) (string, error) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, args...)
	cmd.Dir = clientsDir
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 10 * time.Second
	err := cmd.Run()
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		err = errors.Join(err, errors.New("killed after "+limit.String()))
	}
	return out.String(), err
}

// TestClientsResumeAcrossRestart: Apollo Client with GraphQLWsLink (retrying) subscribes with
// after; the server restarts gracefully (1012) on the same address and data, the post is liked
// while the client is disconnected, and those likes arrive after the reconnect, in order.
func TestClientsResumeAcrossRestart(t *testing.T) {
	node := requireTool(t, "node", "Node.js 20+ with npm (Debian: apt-get install -y nodejs npm), or run .ci/install")
	npmCI(t)
	for _, script := range []string{"apollo-restart.mjs", "apollo-multipart-restart.mjs"} {
		t.Run(script, func(t *testing.T) { resumeAcrossRestart(t, node, script) })
	}
}

// resumeAcrossRestart runs a client script that subscribes, restarts the server under it
// gracefully, likes during the gap, and lets the script check that it resumed without a gap.
func resumeAcrossRestart(t *testing.T, node, script string) {
	s := startServe(t)
	tokens := []string{s.token("ada"), s.token("brian"), s.token("cleo")}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, append([]string{script, s.url}, tokens...)...)
	cmd.Dir = clientsDir
	cmd.WaitDelay = 10 * time.Second
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	lines := bufio.NewScanner(stdout)
	var postID string
	for lines.Scan() {
		if id, ok := strings.CutPrefix(lines.Text(), "READY "); ok {
			postID = id
			break
		}
		t.Logf("node: %s", lines.Text())
	}
	if postID == "" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("%s never got ready: %s", script, stderr.String())
	}

	// A graceful restart on the same address and data; the client retries every second.
	s.stop(t)
	s2 := startServe(t, "--data", s.data, "--addr", s.addr)
	s2.data, s2.tokens = s.data, s.tokens
	const gap = 2
	for _, u := range []string{"dmitri", "ezra"} {
		s2.mustData(s2.do(s2.token(u), `mutation($id: ID!) { likePost(id: $id) { id } }`, map[string]any{"id": postID}), new(any))
	}
	fmt.Fprintf(stdin, "GAP %d\n", gap)
	var rest []string
	for lines.Scan() {
		rest = append(rest, lines.Text())
	}
	err = cmd.Wait()
	out := strings.Join(rest, "\n")
	if err != nil {
		t.Fatalf("node %s: %v\n%s\n%s", script, err, out, stderr.String())
	}
	t.Logf("%s", out)
}
