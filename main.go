// Command postgate is a GraphQL gateway over an event-sourced post system: mutations become events
// in an event store, events reach Kafka, a projector keeps a SQL read model, and queries and
// subscriptions resolve from it. See README.md.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/postgate/postgate/graph"
	"github.com/postgate/postgate/internal/datalock"
	"github.com/postgate/postgate/projector"
	"github.com/postgate/postgate/read"
	readsqlite "github.com/postgate/postgate/read/sqlite"
	"github.com/postgate/postgate/read/sqlserver"
	"github.com/postgate/postgate/write"
	"github.com/postgate/postgate/write/kafka"
	"github.com/postgate/postgate/write/mongo"
	"github.com/postgate/postgate/write/sqlite"
)

const usage = `postgate: a GraphQL gateway over an event-sourced post system.

Usage: postgate <command> [flags]

Commands:
  serve     run the service (embedded defaults when nothing is configured)
  token     print a bearer token: postgate token --user NAME [--ttl 24h]
  rebuild   rebuild the read model from the event store beside the live one
  verify    compare the read model with the fold of the event store; exit 1 on a difference
  migrate   apply read-model migrations
  broker    run the embedded Kafka broker alone (for several postgate processes on one machine)
  dlq list  list the dead-lettered events (with serve stopped when the broker is the embedded one)
  dlq replay  apply the dead-lettered events again, through this binary's projector and upcasters

Every command takes the flags below; each also reads the environment variable named after it.
Run "postgate <command> -h" for them.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run executes one command and returns the process exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd := args[0]
	if cmd == "dlq" && len(args) > 1 && !strings.HasPrefix(args[1], "-") {
		cmd, args = "dlq "+args[1], args[1:]
	}
	fs := flag.NewFlagSet("postgate "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := register(fs)
	user := fs.String("user", "", "token: the user the token is for")
	ttl := fs.Duration("ttl", 24*time.Hour, "token: how long the token is valid")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	log, err := newLogger(cfg, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "postgate:", err)
		return 2
	}
	switch cmd {
	case "serve":
		err = serve(ctx, cfg, log, nil)
	case "token":
		err = token(cfg, *user, *ttl, stdout)
	case "rebuild":
		err = rebuild(ctx, cfg, stdout)
	case "verify":
		var diffs int
		diffs, err = verify(ctx, cfg, stdout)
		if err == nil && diffs > 0 {
			return 1
		}
	case "migrate":
		err = migrate(ctx, cfg, stdout)
	case "broker":
		err = broker(ctx, cfg, log, stdout)
	case "dlq list":
		err = dlqList(ctx, cfg, stdout)
	case "dlq replay":
		err = dlqReplay(ctx, cfg, stdout)
	default:
		fmt.Fprintf(stderr, "postgate: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "postgate %s: %v\n", cmd, err)
		return 1
	}
	return 0
}

func newLogger(cfg *Config, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.str("log-level"))); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch cfg.str("log-format") {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("--log-format: want text or json, got %q", cfg.str("log-format"))
	}
}

// dataDir returns the data directory, creating it.
func dataDir(cfg *Config) (string, error) {
	dir := cfg.str("data")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("create data dir: %w", err)
	}
	return dir, nil
}

// The locks of a data directory (internal/datalock). ownerLock is held by the process that runs
// the embedded broker in the directory (serve with no --kafka-brokers, or broker): the broker's
// files must never be written by two processes, and two such serves would each start one.
// maintenanceLock is held by rebuild and migrate: two rebuilds at once discard each other's
// generation. Processes that share a data dir on purpose (the scale-out roles, which reach a
// broker by --kafka-brokers and share the SQLite files, which SQLite allows) take neither, and
// rebuild stays safe beside a running serve, as the contract says.
const (
	ownerLock       = "postgate.lock"
	maintenanceLock = "maintenance.lock"
)

// lockDataDir takes the named lock of the data dir, creating the dir. Errors: a
// *datalock.HeldError naming the dir and the holder's pid when another process holds it.
func lockDataDir(cfg *Config, name string) (*datalock.Lock, error) {
	dir, err := dataDir(cfg)
	if err != nil {
		return nil, err
	}
	return datalock.Acquire(dir, name)
}

// openEventStore opens MongoDB when a URI is configured, else the embedded SQLite store.
func openEventStore(ctx context.Context, cfg *Config) (write.EventStore, error) {
	if uri := cfg.str("mongo-uri"); uri != "" {
		majority, err := cfg.bool("mongo-majority")
		if err != nil {
			return nil, err
		}
		return mongo.Open(ctx, uri, mongo.WithDatabase(cfg.str("mongo-db")), mongo.WithMajority(majority))
	}
	dir, err := dataDir(cfg)
	if err != nil {
		return nil, err
	}
	return sqlite.Open(ctx, filepath.Join(dir, "events.db"))
}

// readModel is what the commands need of a read model beyond the port.
type readModel interface {
	read.Model
	read.Generations
	read.Inspector
	Migrate(ctx context.Context) error
}

// openReadModel opens SQL Server for a sqlserver:// DSN, else SQLite (the configured file, or the
// embedded default in the data dir). It does not migrate.
func openReadModel(ctx context.Context, cfg *Config) (readModel, error) {
	dsn := cfg.str("read-dsn")
	if strings.HasPrefix(dsn, "sqlserver://") {
		return sqlserver.Open(ctx, dsn)
	}
	if dsn == "" {
		dir, err := dataDir(cfg)
		if err != nil {
			return nil, err
		}
		dsn = filepath.Join(dir, "read.db")
	}
	return readsqlite.Open(ctx, dsn)
}

// openStores opens the event store and the migrated read model, for the commands that compare or
// rebuild one from the other; closeAll closes both.
func openStores(ctx context.Context, cfg *Config) (write.EventStore, readModel, func(), error) {
	store, err := openEventStore(ctx, cfg)
	if err != nil {
		return nil, nil, nil, err
	}
	model, err := openReadModel(ctx, cfg)
	if err != nil {
		store.Close()
		return nil, nil, nil, err
	}
	if err := model.Migrate(ctx); err != nil {
		model.Close()
		store.Close()
		return nil, nil, nil, err
	}
	return store, model, func() { model.Close(); store.Close() }, nil
}

// tokenSettings reads how the gateway verifies tokens and, with fetchKeys, fetches the identity
// provider's key set when one is configured. Errors: a bad setting, and a JWKS that cannot be
// fetched.
func tokenSettings(ctx context.Context, cfg *Config, log *slog.Logger, fetchKeys bool) (graph.ServerConfig, error) {
	var out graph.ServerConfig
	secret, err := jwtSecret(cfg)
	if err != nil {
		return out, err
	}
	maxTTL, err := cfg.timeout("jwt-max-ttl")
	if err != nil {
		return out, err
	}
	out.Secret, out.MaxTokenTTL = secret, maxTTL
	out.JWTIssuer, out.JWTAudience = cfg.str("jwt-issuer"), cfg.str("jwt-audience")
	out.JWTUserClaim = cfg.str("jwt-user-claim")
	if out.JWTUserClaim == "" {
		return out, errors.New("--jwt-user-claim: must name a claim")
	}
	url := cfg.str("jwks-url")
	if url == "" {
		if out.JWTIssuer != "" || out.JWTAudience != "" {
			return out, errors.New("--jwt-issuer and --jwt-audience check the identity provider's tokens: set --jwks-url too")
		}
		return out, nil
	}
	if !strings.HasPrefix(url, "https://") && !strings.HasPrefix(url, "http://") {
		return out, fmt.Errorf("--jwks-url: want an http:// or https:// URL, got %q", url)
	}
	if !fetchKeys {
		return out, nil
	}
	jwks, err := graph.NewJWKS(ctx, url, graph.WithJWKSLogger(log))
	if err != nil {
		return out, fmt.Errorf("--jwks-url: %w; no key is cached, so no token of the provider could be verified", err)
	}
	out.JWKS = jwks
	return out, nil
}

// jwtSecret returns the configured key, or the one kept in the data dir (made on first use).
func jwtSecret(cfg *Config) ([]byte, error) {
	if s := cfg.str("jwt-secret"); s != "" {
		if len(s) < 32 {
			return nil, errors.New("POSTGATE_JWT_SECRET must be at least 32 characters")
		}
		return []byte(s), nil
	}
	dir, err := dataDir(cfg)
	if err != nil {
		return nil, err
	}
	return keyFile(filepath.Join(dir, "jwt.key"))
}

// keyFile reads the signing key kept at path, making it first if there is none. The key is 32
// random bytes, hex encoded. It is written to a temporary file, synced, then linked into place:
// a link fails when the name exists, so when processes race to make the key one wins and the others
// read the winner's, and no process ever reads a half-written key. A key file of any other shape
// is refused rather than used: a short key would be a weak one.
func keyFile(path string) ([]byte, error) {
	if key, err := readKey(path); err == nil || !errors.Is(err, os.ErrNotExist) {
		return key, err
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return nil, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".jwt.key-*")
	if err != nil {
		return nil, fmt.Errorf("create key: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("create key: %w", err)
	}
	if _, err := tmp.WriteString(hex.EncodeToString(raw) + "\n"); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("write key: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("write key: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("write key: %w", err)
	}
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, os.ErrExist) {
		// Some filesystems (SMB, some FUSE mounts) have no hard links: create the file
		// exclusively instead; a racing reader may then wait a moment for its content.
		if err := writeExclusive(path, hex.EncodeToString(raw)+"\n"); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("install key %s: %w", path, err)
		}
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync() // the new name must survive a power loss, or every token issued would be lost
		d.Close()
	}
	for range 50 { // only a writeExclusive still writing leaves the key short
		key, err := readKey(path)
		if err == nil || errors.Is(err, os.ErrNotExist) {
			return key, err
		}
		time.Sleep(20 * time.Millisecond)
	}
	return readKey(path)
}

func writeExclusive(path, content string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func readKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	key := strings.TrimSpace(string(b))
	if _, herr := hex.DecodeString(key); herr != nil || len(key) != 64 {
		return nil, fmt.Errorf("%s does not hold a key postgate made (64 hex characters); remove it to make a new one, or set POSTGATE_JWT_SECRET", path)
	}
	return []byte(key), nil
}

func token(cfg *Config, user string, ttl time.Duration, stdout io.Writer) error {
	if strings.TrimSpace(user) == "" {
		return errors.New("--user is required")
	}
	user, err := graph.UserName(user)
	if err != nil {
		return fmt.Errorf("--user: %w", err)
	}
	if ttl <= 0 {
		return errors.New("--ttl must be positive")
	}
	maxTTL, err := cfg.timeout("jwt-max-ttl")
	if err != nil {
		return err
	}
	if ttl > maxTTL {
		return fmt.Errorf("--ttl %s is longer than --jwt-max-ttl %s: serve would refuse the token", ttl, maxTTL)
	}
	secret, err := jwtSecret(cfg)
	if err != nil {
		return err
	}
	tok, err := graph.IssueToken(secret, user, ttl)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	return nil
}

func migrate(ctx context.Context, cfg *Config, stdout io.Writer) error {
	lock, err := lockDataDir(cfg, maintenanceLock)
	if err != nil {
		return err
	}
	defer lock.Release()
	model, err := openReadModel(ctx, cfg)
	if err != nil {
		return err
	}
	defer model.Close()
	if err := model.Migrate(ctx); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "read model is up to date")
	return nil
}

func verify(ctx context.Context, cfg *Config, stdout io.Writer) (int, error) {
	store, model, closeAll, err := openStores(ctx, cfg)
	if err != nil {
		return 0, err
	}
	defer closeAll()
	diffs, err := projector.Verify(ctx, store, model)
	if err != nil {
		return 0, err
	}
	for _, d := range diffs {
		fmt.Fprintln(stdout, d.String())
	}
	if len(diffs) == 0 {
		fmt.Fprintln(stdout, "read model equals the fold of the event store")
	} else {
		fmt.Fprintf(stdout, "%d differences\n", len(diffs))
	}
	return len(diffs), nil
}

func rebuild(ctx context.Context, cfg *Config, stdout io.Writer) error {
	lock, err := lockDataDir(cfg, maintenanceLock)
	if err != nil {
		return err
	}
	defer lock.Release()
	store, model, closeAll, err := openStores(ctx, cfg)
	if err != nil {
		return err
	}
	defer closeAll()
	progress := plainProgress(stdout)
	if f, ok := stdout.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		bar := progressbar.Default(-1, "rebuilding read model")
		progress = func(done, total int64) {
			bar.ChangeMax64(total)
			_ = bar.Set64(done)
		}
		defer bar.Finish()
	}
	stats, err := projector.Rebuild(ctx, store, model, progress)
	if err != nil {
		return err
	}
	for _, e := range stats.Skipped {
		fmt.Fprintf(stdout, "skipped event %s (%s version %d, type %s schema %d): this binary cannot decode it or its stream\n",
			e.ID, e.Stream, e.Version, e.Type, e.Schema)
	}
	fmt.Fprintf(stdout, "rebuilt read model: %d events into generation %d (replaced %d), at position %d\n",
		stats.Events, stats.Generation, stats.Replaced, stats.Position)
	return nil
}

// plainProgress prints a progress line at most once a second, and the last one.
func plainProgress(w io.Writer) func(done, total int64) {
	var last time.Time
	return func(done, total int64) {
		if time.Since(last) < time.Second && done < total {
			return
		}
		last = time.Now()
		pct := 100.0
		if total > 0 {
			pct = float64(done) * 100 / float64(total)
		}
		fmt.Fprintf(w, "rebuild: %d/%d events (%.0f%%)\n", done, total, pct)
	}
}

func broker(ctx context.Context, cfg *Config, log *slog.Logger, stdout io.Writer) error {
	dir, err := dataDir(cfg)
	if err != nil {
		return err
	}
	partitions, err := cfg.int("partitions")
	if err != nil {
		return err
	}
	lock, err := datalock.Acquire(dir, ownerLock)
	if err != nil {
		return err
	}
	defer lock.Release()
	b, err := kafka.StartBroker(dir, cfg.str("broker-addr"), partitions) // state in dir/kafka
	if err != nil {
		return err
	}
	defer b.Close()
	fmt.Fprintln(stdout, strings.Join(b.Addrs(), ","))
	log.Info("embedded broker running", "addrs", b.Addrs())
	<-ctx.Done()
	return nil
}
