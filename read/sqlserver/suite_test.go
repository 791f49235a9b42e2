package sqlserver_test

import (
	"context"
	"os"
	"testing"

	"github.com/postgate/postgate/read"
	"github.com/postgate/postgate/read/readtest"
	"github.com/postgate/postgate/read/sqlserver"
)

// TestSuite runs the shared behaviour suite against a real SQL Server when
// POSTGATE_TEST_MSSQL_DSN names one (sqlserver://user:pass@host:1433?database=db). The database's
// read-model tables are emptied before every case.
func TestSuite(t *testing.T) {
	dsn := os.Getenv("POSTGATE_TEST_MSSQL_DSN")
	if dsn == "" {
		t.Skip("POSTGATE_TEST_MSSQL_DSN is not set: the SQL Server behaviour suite needs a server; the golden, deny-list and parameter-limit tests ran instead")
	}
	readtest.Run(t, func(t *testing.T) read.Model {
		ctx := context.Background()
		m, err := sqlserver.Open(ctx, dsn)
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		if err := m.Migrate(ctx); err != nil {
			m.Close()
			t.Fatalf("migrate: %v", err)
		}
		for _, q := range []string{"DELETE FROM dbo.posts;", "DELETE FROM dbo.comments;", "DELETE FROM dbo.likes;",
			"UPDATE dbo.generation SET active = 1, next_gen = 2 WHERE id = 1;"} {
			if _, err := m.Writer().ExecContext(ctx, q); err != nil {
				m.Close()
				t.Fatalf("%s: %v", q, err)
			}
		}
		return m
	})
}
