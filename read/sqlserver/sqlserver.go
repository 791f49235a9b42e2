// Package sqlserver is the read model in Microsoft SQL Server (github.com/microsoft/go-mssqldb via
// sqlx). The projection logic is shared with read/sqlite; this package holds only the T-SQL, built
// by pure functions (see dialect.go) that golden tests pin, since no server runs in CI here.
package sqlserver

import (
	"context"
	"embed"
	"fmt"
	"io/fs"

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

// Migrate applies the embedded migrations (goose, mssql dialect). Every migration is guarded by
// OBJECT_ID, so a second process migrating at once does not fail. Errors are goose's, wrapped.
func (m *Model) Migrate(ctx context.Context) error {
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
