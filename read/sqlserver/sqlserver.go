// Package sqlserver is the read model in Microsoft SQL Server (github.com/microsoft/go-mssqldb via
// sqlx). The projection logic is shared with read/sqlite; this package holds only the T-SQL, built
// by pure functions (see dialect.go) that golden tests pin, since no server runs in CI here.
package sqlserver

import (
	"context"
	"database/sql/driver"
	"embed"
	"fmt"
	"io/fs"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/microsoft/go-mssqldb" // registers the "sqlserver" driver
	"github.com/pressly/goose/v3"

	"github.com/postgate/postgate/read"
	"github.com/postgate/postgate/read/internal/sqlmodel"
)

//go:embed migrations/*.sql
var migrations embed.FS

// MigrationTable is where goose records the read model's migrations.
const MigrationTable = "read_goose_version"

func init() {
	sqlx.BindDriver("sqlserver", sqlx.AT)
}

// Model is the SQL Server read model. It implements read.Model, read.Inspector and
// read.Generations.
type Model struct {
	*sqlmodel.Model
	db *sqlx.DB
}

var (
	_ read.Model       = (*Model)(nil)
	_ read.Inspector   = (*Model)(nil)
	_ read.Generations = (*Model)(nil)
	_ read.Positions   = (*Model)(nil)
	_ read.Repairer    = (*Model)(nil)
)

// Open connects to dsn (sqlserver://user:pass@host:1433?database=db). It does not migrate: call
// Migrate before the first use. Errors come from opening or pinging the server.
func Open(ctx context.Context, dsn string) (*Model, error) {
	db, err := sqlx.Open("sqlserver", dsn)
	if err != nil {
		return nil, fmt.Errorf("open read model: %w", err)
	}
	db.SetMaxOpenConns(16)
	db.SetMaxIdleConns(16)
	m := &Model{Model: sqlmodel.New(dialect{}, db, db), db: db}
	if err := m.Ping(ctx); err != nil {
		m.Close()
		return nil, fmt.Errorf("open read model: %w", err)
	}
	return m, nil
}

// migrateLock serialises migrations across processes: the OBJECT_ID guards inside a migration are
// checks, not locks, so two processes starting at once could both try to create a table. The lock
// is held by a session of its own for the whole run and released explicitly: closing a
// database/sql connection only returns it to the pool, where the session (and a lock it owns)
// would live on.
const migrateLock = "DECLARE @lock INT; EXEC @lock = sp_getapplock @Resource = N'postgate.read.migrate', @LockMode = N'Exclusive', @LockOwner = N'Session', @LockTimeout = 120000; IF @lock < 0 THROW 51000, N'postgate: read-model migration lock not granted', 1;"

const migrateUnlock = "EXEC sp_releaseapplock @Resource = N'postgate.read.migrate', @LockOwner = N'Session';"

// Migrate applies the embedded migrations (goose, mssql dialect) under an application lock, so
// processes starting together migrate one after the other. Errors are goose's or the lock's, wrapped.
func (m *Model) Migrate(ctx context.Context) error {
	lock, err := m.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("migrate read model: %w", err)
	}
	defer lock.Close()
	if _, err := lock.ExecContext(ctx, migrateLock); err != nil {
		return fmt.Errorf("migrate read model: lock: %w", err)
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, err := lock.ExecContext(uctx, migrateUnlock); err != nil {
			// A session that still owns the lock must not go back to the pool: discard it.
			_ = lock.Raw(func(any) error { return driver.ErrBadConn })
		}
	}()
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return fmt.Errorf("migrate read model: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectMSSQL, m.db.DB, sub, goose.WithTableName(MigrationTable))
	if err != nil {
		return fmt.Errorf("migrate read model: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("migrate read model: %w", err)
	}
	return nil
}
