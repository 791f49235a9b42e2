// Package sqlite is the read model in SQLite (modernc.org/sqlite, pure Go): the embedded default.
// One writer connection serialises Apply; a pool of readers serves queries concurrently (WAL).
// Several processes may open the same file: SQLite's locks and busy_timeout arbitrate.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"runtime"
	"strings"

	"github.com/jmoiron/sqlx"
	"github.com/pressly/goose/v3"
	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/postgate/postgate/read"
	"github.com/postgate/postgate/read/internal/sqlmodel"
)

//go:embed migrations/*.sql
var migrations embed.FS

// MigrationTable is where goose records the read model's migrations. It is not goose's default so
// that an event store sharing the database file can keep its own history.
const MigrationTable = "read_goose_version"

func init() {
	sqlx.BindDriver("sqlite", sqlx.QUESTION)
}

// Model is the SQLite read model. It implements read.Model, read.Inspector and read.Generations.
type Model struct {
	*sqlmodel.Model
	dsn string
}

var (
	_ read.Model       = (*Model)(nil)
	_ read.Inspector   = (*Model)(nil)
	_ read.Generations = (*Model)(nil)
	_ read.Positions   = (*Model)(nil)
	_ read.Repairer    = (*Model)(nil)
)

// Open opens (creating it if needed) the read model at dsnOrPath: a file path, or a "file:" URI
// whose own parameters are kept. It does not migrate: call Migrate before the first use (serve
// and `postgate migrate` do). Errors come from opening or pinging the database.
func Open(ctx context.Context, dsnOrPath string) (*Model, error) {
	base := dsnOrPath
	if !strings.HasPrefix(base, "file:") {
		base = "file:" + base
	}
	writer, err := sqlx.Open("sqlite", withParams(base, true))
	if err != nil {
		return nil, fmt.Errorf("open read model %s: %w", dsnOrPath, err)
	}
	// One writer connection: SQLite allows one writer at a time, and queuing in Go is cheaper
	// than busy-waiting inside SQLite.
	writer.SetMaxOpenConns(1)
	reader, err := sqlx.Open("sqlite", withParams(base, false))
	if err != nil {
		writer.Close()
		return nil, fmt.Errorf("open read model %s: %w", dsnOrPath, err)
	}
	n := max(4, runtime.GOMAXPROCS(0))
	reader.SetMaxOpenConns(n)
	reader.SetMaxIdleConns(n)
	m := &Model{Model: sqlmodel.New(dialect{}, writer, reader), dsn: base}
	if err := m.Ping(ctx); err != nil {
		m.Close()
		return nil, fmt.Errorf("open read model %s: %w", dsnOrPath, err)
	}
	return m, nil
}

// withParams adds the pragmas that every connection needs unless the DSN sets them itself.
// Writers begin IMMEDIATE transactions so that a read-then-write transaction never fails to
// upgrade its lock; readers begin deferred ones so that they never wait for a writer.
func withParams(dsn string, writer bool) string {
	params := [][2]string{ // the text that marks a parameter as set, and the parameter
		{"journal_mode", "_pragma=journal_mode(WAL)"},
		{"synchronous", "_pragma=synchronous(NORMAL)"},
		{"busy_timeout", "_pragma=busy_timeout(10000)"},
		{"_time_format", "_time_format=sqlite"},
	}
	if writer {
		params = append(params, [2]string{"_txlock", "_txlock=immediate"})
	}
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	for _, p := range params {
		if strings.Contains(dsn, p[0]) {
			continue
		}
		dsn += sep + p[1]
		sep = "&"
	}
	return dsn
}

// Migrate applies the embedded migrations (goose, sqlite3 dialect). Safe to run from several
// processes at once and on every start. Errors are goose's, wrapped.
func (m *Model) Migrate(ctx context.Context) error {
	// goose holds a connection for the whole run: give it its own so the single writer
	// connection cannot deadlock against it.
	db, err := sql.Open("sqlite", withParams(m.dsn, true))
	if err != nil {
		return fmt.Errorf("migrate read model: %w", err)
	}
	defer db.Close()
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return fmt.Errorf("migrate read model: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectSQLite3, db, sub, goose.WithTableName(MigrationTable))
	if err != nil {
		return fmt.Errorf("migrate read model: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("migrate read model: %w", err)
	}
	return nil
}
