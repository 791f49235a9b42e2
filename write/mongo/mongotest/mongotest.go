// Package mongotest gives tests a MongoDB-compatible server: the one named by
// POSTGATE_TEST_MONGO_URI when it is set (a real MongoDB, as in CI with Docker), otherwise an
// embedded FerretDB on 127.0.0.1 with an in-memory SQLite backend.
//
// It is for tests only: it imports FerretDB, which must never reach the postgate binary, so only
// _test.go files may import this package.
package mongotest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"
)

// EnvURI names the environment variable that points the tests at a real MongoDB.
const EnvURI = "POSTGATE_TEST_MONGO_URI"

// server is the one embedded FerretDB of this test binary. ferretdb.New writes a package
// variable, so parallel tests must not each start one; a database per test isolates them
// instead. It runs until the test binary exits.
var server struct {
	once sync.Once
	uri  string
	err  error
	dir  string             // the SQLite files, removed by Main
	stop context.CancelFunc // stops the server
	done chan struct{}      // closed when Run has returned
}

// Main runs the tests of a package that uses this one and then stops the embedded server and
// removes its files. Call it from TestMain: os.Exit(mongotest.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	if server.stop != nil {
		server.stop()
		select {
		case <-server.done:
		case <-time.After(10 * time.Second):
		}
	}
	if server.dir != "" {
		_ = os.RemoveAll(server.dir)
	}
	return code
}

// EnvMajority names the environment variable that turns majority write and read concern off
// ("false") for a real standalone server, which is not a replica set.
const EnvMajority = "POSTGATE_TEST_MONGO_MAJORITY"

// Majority reports whether tests should use majority write and read concern: true unless
// POSTGATE_TEST_MONGO_MAJORITY is "false" or "0". FerretDB accepts either.
func Majority() bool {
	v := os.Getenv(EnvMajority)
	return v != "false" && v != "0"
}

// Real reports whether the tests run against a real MongoDB (POSTGATE_TEST_MONGO_URI is set).
func Real() bool { return os.Getenv(EnvURI) != "" }

// URI returns the connection string of the test server, starting the embedded FerretDB on first
// use. The test fails when the server cannot be started.
func URI(tb testing.TB) string {
	tb.Helper()
	if uri := os.Getenv(EnvURI); uri != "" {
		return uri
	}
	server.once.Do(func() { server.uri, server.err = startFerretDB() })
	if server.err != nil {
		tb.Fatalf("start ferretdb: %v", server.err)
	}
	return server.uri
}

// startFerretDB starts the embedded server and waits until it accepts connections.
func startFerretDB() (string, error) {
	dir, err := os.MkdirTemp("", "postgate-ferretdb-")
	if err != nil {
		return "", fmt.Errorf("temp dir: %w", err)
	}
	server.dir = dir
	// Files, not SQLite's "?mode=memory": in memory, FerretDB's SQLite pool has one connection,
	// and an update (which reads, then opens a transaction) waits for it forever.
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: "127.0.0.1:0"},
		Handler:   "sqlite",
		SQLiteURL: "file:" + dir + "/",
		Logger:    slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return "", fmt.Errorf("new: %w", err)
	}
	// Run must be started before MongoDBURI, which waits for the listener Run opens.
	ctx, stop := context.WithCancel(context.Background())
	server.stop, server.done = stop, make(chan struct{})
	go func() {
		defer close(server.done)
		_ = f.Run(ctx)
	}()
	done := make(chan string, 1)
	go func() { done <- f.MongoDBURI() }()
	select {
	case uri := <-done:
		return uri, nil
	case <-time.After(60 * time.Second):
		return "", fmt.Errorf("no listener after 60 s")
	}
}

// Database returns a fresh database name for tb (prefix "postgate_test_"), so that tests, and
// runs against a shared real server, never see each other's data.
func Database(tb testing.TB) string {
	tb.Helper()
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		tb.Fatalf("random database name: %v", err)
	}
	return "postgate_test_" + hex.EncodeToString(b[:])
}
