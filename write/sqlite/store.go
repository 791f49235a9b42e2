// Package sqlite is the embedded event store: one SQLite file, no server. It is the default when no
// MongoDB is configured and passes the shared suite in write/storetest.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/postgate/postgate/write"
)

var _ write.EventStore = (*EventStore)(nil)

const schema = `
CREATE TABLE IF NOT EXISTS events (
	position INTEGER PRIMARY KEY,  -- the global order; dense because appends are serialised
	id       TEXT    NOT NULL UNIQUE,
	stream   TEXT    NOT NULL,
	version  INTEGER NOT NULL,
	post_id  TEXT    NOT NULL,
	type     TEXT    NOT NULL,
	schema   INTEGER NOT NULL,
	actor    TEXT    NOT NULL,
	at       TEXT    NOT NULL,     -- RFC 3339 with nanoseconds, UTC: round-trips exactly
	data     BLOB    NOT NULL,
	UNIQUE (stream, version)       -- optimistic concurrency, enforced by the store itself
);
CREATE TABLE IF NOT EXISTS snapshots (
	stream  TEXT PRIMARY KEY,
	version INTEGER NOT NULL,
	schema  INTEGER NOT NULL,
	state   BLOB    NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
	name     TEXT PRIMARY KEY,
	position INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS write_probe (  -- CheckWrite's one row; nothing reads it
	id INTEGER PRIMARY KEY CHECK (id = 1),
	at TEXT NOT NULL
);
`

// EventStore keeps events in SQLite. Appends from all goroutines go through one writer goroutine that
// commits whatever has queued up in a single transaction (group commit), each append inside its own
// savepoint so that a conflicting append fails alone. Reads use a separate pool of connections,
// which WAL mode lets run beside the writer.
type EventStore struct {
	w *sql.DB
	r *sql.DB
	// path is the database file, whose file system CheckWrite measures.
	path    string
	minFree int64
	// Statements run on every command are prepared once: parsing costs as much as executing here.
	stmtVersion, stmtInsert, stmtLoad *sql.Stmt
	appends                           chan *appendReq
	quit                              chan struct{}
	done                              chan struct{}
}

type appendReq struct {
	stream   string
	expected int64
	events   []write.Event
	result   chan appendResult
}

type appendResult struct {
	events []write.Event
	err    error
}

// maxGroup bounds how many appends share one transaction.
const maxGroup = 256

// DSN returns the modernc.org/sqlite data source name for a database file, with the settings this
// project relies on: WAL (readers beside the writer), synchronous FULL (a commit is on disk before
// the append returns: with NORMAL, a power loss can take back acknowledged events, whose positions
// and versions would then be handed out again after the fast path published them), a busy timeout
// (other processes may share the file), immediate write transactions (no upgrade deadlocks) and
// SQLite's own time format. Group commit shares one sync among the appends queued together.
func DSN(path string) string {
	path = filePath(path)
	q := url.Values{}
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)")
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Set("_txlock", "immediate")
	q.Set("_time_format", "sqlite")
	return "file:" + path + "?" + q.Encode()
}

// Option configures Open.
type Option func(*EventStore)

// DefaultMinFree is the free space, in bytes, below which CheckWrite reports the disk full.
//
// The probe write alone cannot tell: in WAL mode, once a checkpoint has copied the log into the
// database file, SQLite writes the log again from its start, into blocks the file already has. A
// one-page probe then succeeds on a full file system, while an append that needs more log than the
// last one, or the checkpoint that must grow the database file, fails. 1 MiB holds the log of
// hundreds of appends and is noise on any real disk.
const DefaultMinFree = 1 << 20

// WithMinFree sets the free space below which CheckWrite reports the disk full (default
// DefaultMinFree); 0 turns the measurement off and leaves only the probe write.
func WithMinFree(bytes int64) Option { return func(s *EventStore) { s.minFree = bytes } }

// filePath returns the file name of path, which may also be a file: URI with parameters.
func filePath(path string) string {
	if strings.HasPrefix(path, "file:") {
		path = strings.TrimPrefix(path, "file:")
		if i := strings.IndexByte(path, '?'); i >= 0 {
			path = path[:i]
		}
	}
	return path
}

// Open opens (creating if needed) the event store in the SQLite file at path.
func Open(ctx context.Context, path string, opts ...Option) (*EventStore, error) {
	w, err := sql.Open("sqlite", DSN(path))
	if err != nil {
		return nil, fmt.Errorf("open event store %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	if _, err := w.ExecContext(ctx, schema); err != nil {
		w.Close()
		return nil, fmt.Errorf("create event store schema in %s: %w", path, err)
	}
	r, err := sql.Open("sqlite", DSN(path))
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("open event store %s: %w", path, err)
	}
	r.SetMaxOpenConns(8)
	prepare := func(db *sql.DB, q string) *sql.Stmt {
		if err != nil {
			return nil
		}
		var st *sql.Stmt
		st, err = db.PrepareContext(ctx, q)
		return st
	}
	stmtVersion := prepare(w, "SELECT COALESCE(MAX(version), 0) FROM events WHERE stream = ?")
	stmtInsert := prepare(w, `INSERT INTO events (id, stream, version, post_id, type, schema, actor, at, data)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING position`)
	stmtLoad := prepare(r, selectEvents+"WHERE stream = ? AND version > ? ORDER BY version")
	if err != nil {
		w.Close()
		r.Close()
		return nil, fmt.Errorf("prepare event store statements: %w", err)
	}
	s := &EventStore{w: w, r: r, path: filePath(path), minFree: DefaultMinFree, stmtVersion: stmtVersion, stmtInsert: stmtInsert, stmtLoad: stmtLoad, appends: make(chan *appendReq, maxGroup), quit: make(chan struct{}), done: make(chan struct{})}
	for _, o := range opts {
		o(s)
	}
	go s.writer()
	return s, nil
}

// Append implements write.EventStore. Errors: write.ErrConflict when the stream is not at expected.
func (s *EventStore) Append(ctx context.Context, stream string, expected int64, events []write.Event) ([]write.Event, error) {
	if len(events) == 0 {
		return nil, nil
	}
	for _, e := range events {
		if e.ID == "" || e.Type == "" || e.PostID == "" {
			return nil, fmt.Errorf("append to %s: event without id, type or post id", stream)
		}
	}
	req := &appendReq{stream: stream, expected: expected, events: events, result: make(chan appendResult, 1)}
	select {
	case s.appends <- req:
	case <-s.quit:
		return nil, errors.New("event store closed")
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	// Once queued, the append is committed or not regardless of ctx: wait for the truth, so that
	// an acknowledged mutation is never reported as failed (or the other way round).
	select {
	case res := <-req.result:
		return res.events, res.err
	case <-s.done:
		// The writer has stopped; it answers every request it took before stopping.
		select {
		case res := <-req.result:
			return res.events, res.err
		default:
			return nil, errors.New("event store closed")
		}
	}
}

// writer commits queued appends in groups until Close.
func (s *EventStore) writer() {
	defer close(s.done)
	for {
		var group []*appendReq
		select {
		case req := <-s.appends:
			group = append(group, req)
		case <-s.quit:
			// Commit what was queued before Close rather than leaving its callers guessing.
			for {
				select {
				case req := <-s.appends:
					s.commit([]*appendReq{req})
				default:
					return
				}
			}
		}
	drain:
		for len(group) < maxGroup {
			select {
			case req := <-s.appends:
				group = append(group, req)
			default:
				break drain
			}
		}
		s.commit(group)
	}
}

// commit stores a group of appends in one transaction. If the transaction itself fails, every
// append of the group gets that error and nothing is stored.
func (s *EventStore) commit(group []*appendReq) {
	results := make([]appendResult, len(group))
	err := func() error {
		ctx := context.Background()
		tx, err := s.w.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback()
		if len(group) == 1 {
			// Alone in its transaction, an append needs no savepoint: a failure rolls back everything.
			evs, err := s.appendInTx(ctx, tx, group[0])
			results[0] = appendResult{events: evs, err: err}
			if err != nil {
				return nil
			}
			return tx.Commit()
		}
		for i, req := range group {
			if _, err := tx.ExecContext(ctx, "SAVEPOINT a"); err != nil {
				return err
			}
			evs, err := s.appendInTx(ctx, tx, req)
			if err != nil {
				if _, rerr := tx.ExecContext(ctx, "ROLLBACK TO a"); rerr != nil {
					return rerr
				}
			}
			if _, err := tx.ExecContext(ctx, "RELEASE a"); err != nil {
				return err
			}
			results[i] = appendResult{events: evs, err: err}
		}
		return tx.Commit()
	}()
	for i, req := range group {
		if err != nil {
			results[i] = appendResult{err: fmt.Errorf("append to %s: %w", req.stream, err)}
		}
		req.result <- results[i]
	}
}

func (s *EventStore) appendInTx(ctx context.Context, tx *sql.Tx, req *appendReq) ([]write.Event, error) {
	var current int64
	if err := tx.StmtContext(ctx, s.stmtVersion).QueryRowContext(ctx, req.stream).Scan(&current); err != nil {
		return nil, err
	}
	if current != req.expected {
		return nil, write.Errorf(write.KindConflict, "stream %s is at version %d, not %d", req.stream, current, req.expected)
	}
	out := make([]write.Event, len(req.events))
	for i, e := range req.events {
		e.Stream, e.Version = req.stream, req.expected+int64(i)+1
		e.At = e.At.UTC()
		err := tx.StmtContext(ctx, s.stmtInsert).QueryRowContext(ctx, e.ID, e.Stream, e.Version, e.PostID, e.Type, e.Schema, e.Actor, e.At.Format(time.RFC3339Nano), []byte(e.Data)).Scan(&e.Position)
		if err != nil {
			var se *sqlite.Error
			if errors.As(err, &se) && (se.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || se.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY) {
				return nil, write.Errorf(write.KindConflict, "stream %s: version %d or event %s already stored", req.stream, e.Version, e.ID)
			}
			return nil, err
		}
		out[i] = e
	}
	return out, nil
}

const selectEvents = "SELECT position, id, stream, version, post_id, type, schema, actor, at, data FROM events "

// Load implements write.EventStore.
func (s *EventStore) Load(ctx context.Context, stream string, after int64) ([]write.Event, error) {
	rows, err := s.stmtLoad.QueryContext(ctx, stream, after)
	return scanEvents(rows, err)
}

// ReadAll implements write.EventStore. Positions are dense and commit in order because one writer
// hands them out inside its transaction.
func (s *EventStore) ReadAll(ctx context.Context, after int64, limit int) ([]write.Event, error) {
	return s.query(ctx, selectEvents+"WHERE position > ? ORDER BY position LIMIT ?", after, limit)
}

func (s *EventStore) query(ctx context.Context, q string, args ...any) ([]write.Event, error) {
	rows, err := s.r.QueryContext(ctx, q, args...)
	return scanEvents(rows, err)
}

func scanEvents(rows *sql.Rows, err error) ([]write.Event, error) {
	if err != nil {
		return nil, fmt.Errorf("query events: %w", err)
	}
	defer rows.Close()
	var out []write.Event
	for rows.Next() {
		var e write.Event
		var at string
		var data []byte
		if err := rows.Scan(&e.Position, &e.ID, &e.Stream, &e.Version, &e.PostID, &e.Type, &e.Schema, &e.Actor, &at, &data); err != nil {
			return nil, fmt.Errorf("scan event: %w", err)
		}
		if e.At, err = time.Parse(time.RFC3339Nano, at); err != nil {
			return nil, fmt.Errorf("event %s: bad time %q: %w", e.ID, at, err)
		}
		e.Data = data
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("query events: %w", err)
	}
	return out, nil
}

// Head implements write.EventStore.
func (s *EventStore) Head(ctx context.Context) (int64, error) {
	var head int64
	if err := s.r.QueryRowContext(ctx, "SELECT COALESCE(MAX(position), 0) FROM events").Scan(&head); err != nil {
		return 0, fmt.Errorf("read head: %w", err)
	}
	return head, nil
}

// LoadSnapshot implements write.EventStore.
func (s *EventStore) LoadSnapshot(ctx context.Context, stream string) (write.Snapshot, bool, error) {
	snap := write.Snapshot{Stream: stream}
	err := s.r.QueryRowContext(ctx, "SELECT version, schema, state FROM snapshots WHERE stream = ?", stream).
		Scan(&snap.Version, &snap.Schema, &snap.State)
	if errors.Is(err, sql.ErrNoRows) {
		return write.Snapshot{}, false, nil
	}
	if err != nil {
		return write.Snapshot{}, false, fmt.Errorf("load snapshot of %s: %w", stream, err)
	}
	return snap, true, nil
}

// SaveSnapshot implements write.EventStore. An older snapshot never replaces a newer one.
func (s *EventStore) SaveSnapshot(ctx context.Context, snap write.Snapshot) error {
	_, err := s.w.ExecContext(ctx, `INSERT INTO snapshots (stream, version, schema, state) VALUES (?, ?, ?, ?)
		ON CONFLICT (stream) DO UPDATE SET version = excluded.version, schema = excluded.schema, state = excluded.state
		WHERE excluded.version >= snapshots.version OR excluded.schema <> snapshots.schema`,
		snap.Stream, snap.Version, snap.Schema, snap.State)
	if err != nil {
		return fmt.Errorf("save snapshot of %s: %w", snap.Stream, err)
	}
	return nil
}

// Checkpoint implements write.EventStore.
func (s *EventStore) Checkpoint(ctx context.Context, name string) (int64, error) {
	var pos int64
	err := s.r.QueryRowContext(ctx, "SELECT position FROM checkpoints WHERE name = ?", name).Scan(&pos)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read checkpoint %s: %w", name, err)
	}
	return pos, nil
}

// SaveCheckpoint implements write.EventStore.
func (s *EventStore) SaveCheckpoint(ctx context.Context, name string, position int64) error {
	_, err := s.w.ExecContext(ctx, `INSERT INTO checkpoints (name, position) VALUES (?, ?)
		ON CONFLICT (name) DO UPDATE SET position = excluded.position`, name, position)
	if err != nil {
		return fmt.Errorf("save checkpoint %s: %w", name, err)
	}
	return nil
}

// Ping implements write.EventStore: a reader answers.
func (s *EventStore) Ping(ctx context.Context) error {
	return s.r.PingContext(ctx)
}

// CheckWrite implements write.EventStore. It first asks the database's file system whether it
// takes writes and how much space it has left (see DefaultMinFree), then rewrites the one row of
// write_probe through the writer connection, with the same WAL and synchronous FULL commit as an
// append. Errors: write.ErrReadOnly for a read-only file system or database, write.ErrDiskFull for
// a full one (or one below the free space threshold), and SQLite's error for anything else.
func (s *EventStore) CheckWrite(ctx context.Context) error {
	if err := checkFileSystem(s.path, s.minFree); err != nil {
		return fmt.Errorf("check write: %w", err)
	}
	_, err := s.w.ExecContext(ctx, `INSERT INTO write_probe (id, at) VALUES (1, ?)
		ON CONFLICT (id) DO UPDATE SET at = excluded.at`, time.Now().UTC().Format(time.RFC3339Nano))
	if err != nil {
		return fmt.Errorf("check write: %w", classify(err))
	}
	return nil
}

// classify adds the write.EventStore reason to a SQLite error that has one.
func classify(err error) error {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return err
	}
	switch se.Code() & 0xff { // the primary result code; the extended ones add detail in the high bits
	case sqlite3.SQLITE_FULL:
		return fmt.Errorf("%w: %w", write.ErrDiskFull, err)
	case sqlite3.SQLITE_READONLY:
		return fmt.Errorf("%w: %w", write.ErrReadOnly, err)
	case sqlite3.SQLITE_PERM, sqlite3.SQLITE_AUTH:
		return fmt.Errorf("%w: %w", write.ErrWriteDenied, err)
	}
	return err
}

// Close stops the writer after the appends already taken and closes the database.
func (s *EventStore) Close() error {
	select {
	case <-s.quit:
		return nil
	default:
	}
	close(s.quit)
	<-s.done
	return errors.Join(s.w.Close(), s.r.Close())
}
