package sqlserver

import (
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/postgate/postgate/read"
	"github.com/postgate/postgate/read/internal/sqlmodel"
)

var update = flag.Bool("update", false, "rewrite the golden T-SQL files under testdata")

// statement is one T-SQL statement as the model sends it, with the number of arguments it is sent with.
type statement struct {
	name string
	sql  string
	args int
}

// statements builds every statement the SQL Server model can send, at small and at the largest
// batch sizes the model uses.
func statements() []statement {
	d := dialect{}
	in := sqlmodel.InListSize(d)
	var out []statement
	add := func(name, sql string, args int) { out = append(out, statement{name, sql, args}) }
	add("lock_apply", d.LockApply(), 0)
	add("active_gen", d.ActiveGen(), 0)
	for _, n := range []int{1, 3} {
		add(fmt.Sprintf("select_posts_%d", n), d.SelectPosts(n), 1+n)
		add(fmt.Sprintf("select_likes_%d", n), d.SelectLikes(n), 1+2*n)
		add(fmt.Sprintf("update_post_likes_%d", n), d.UpdatePostLikes(n), n*sqlmodel.PostLikeCols)
		add(fmt.Sprintf("update_posts_%d", n), d.UpdatePosts(n), n*sqlmodel.PostUpdateCols)
		add(fmt.Sprintf("upsert_posts_%d", n), d.UpsertPosts(n), n*sqlmodel.PostCols)
		add(fmt.Sprintf("upsert_likes_%d", n), d.UpsertLikes(n), n*sqlmodel.LikeCols)
		add(fmt.Sprintf("insert_likes_%d", n), d.InsertLikes(n), n*sqlmodel.LikeCols)
		add(fmt.Sprintf("update_likes_%d", n), d.UpdateLikes(n), n*sqlmodel.LikeUpdateCols)
		add(fmt.Sprintf("comment_pages_%d", n), d.CommentPages(n, false), n+1)
		add(fmt.Sprintf("comment_pages_%d_after", n), d.CommentPages(n, true), n+3)
		add(fmt.Sprintf("liked_by_%d", n), d.LikedBy(n), 1+n)
	}
	add("insert_comment", d.InsertComment(), 6)
	add("update_comment", d.UpdateComment(), 5)
	add("delete_comment", d.DeleteComment(), 3)
	add("post", d.Post(), 1)
	add("stream_version", d.StreamVersion(), 1)
	add("like_version", d.LikeVersion(), 2)
	for i, s := range d.NextGen() {
		add(fmt.Sprintf("next_gen_%d", i), s, 0)
	}
	add("set_active", d.SetActive(), 1)
	for _, t := range sqlmodel.Tables {
		add("delete_gen_"+t, d.DeleteGen(t), 1)
		add("delete_inactive_"+t, d.DeleteInactive(t), 0)
	}
	add("dump_posts", d.DumpPosts(), 0)
	add("dump_comments", d.DumpComments(), 0)
	add("dump_likes", d.DumpLikes(), 0)
	add("applied_position", d.AppliedPosition(), 0)
	add("save_applied_position", d.SaveAppliedPosition(), 2)
	add("dump_post", d.DumpPost(), 2)
	add("dump_post_comments", d.DumpPostComments(), 2)
	add("dump_post_likes", d.DumpPostLikes(), 2)
	for _, t := range sqlmodel.Tables {
		add("delete_post_"+t, d.DeletePost(t), 2)
	}
	cursorAt := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	orders := map[read.PostOrder]string{read.Newest: "newest", read.Oldest: "oldest", read.MostLiked: "most_liked"}
	for o, oname := range orders {
		for _, withCursor := range []bool{false, true} {
			for _, f := range []struct {
				name string
				f    read.PostFilter
			}{
				{"all", read.PostFilter{}},
				{"author", read.PostFilter{Author: "ann"}},
				{"with_comments", read.PostFilter{WithComments: true}},
				{"min_likes", read.PostFilter{MinLikes: 3}},
				{"every_filter", read.PostFilter{Author: "ann", MinLikes: 3, WithComments: true}},
			} {
				f.f.Order, f.f.First = o, 20
				var c *sqlmodel.Cursor
				name := "posts_" + oname + "_" + f.name
				if withCursor {
					cur := sqlmodel.CursorOf(o, read.Post{ID: "p1", CreatedAt: cursorAt, Likes: 7})
					c = &cur
					name += "_after"
				}
				q, args := d.Posts(f.f, c)
				add(name, q, len(args))
			}
		}
	}
	// The largest statements the model sends, which must stay under 2,100 parameters.
	add("max_select_posts", d.SelectPosts(in), 1+in)
	add("max_select_likes", d.SelectLikes(in/sqlmodel.LikeKeyCols), 1+sqlmodel.LikeKeyCols*(in/sqlmodel.LikeKeyCols))
	add("max_comment_pages", d.CommentPages(sqlmodel.CommentPagesSize(d), true), sqlmodel.CommentPagesSize(d)+3)
	add("max_liked_by", d.LikedBy(in), 1+in)
	for _, m := range []struct {
		name string
		cols int
		sql  func(n int) string
	}{
		{"upsert_posts", sqlmodel.PostCols, d.UpsertPosts},
		{"update_post_likes", sqlmodel.PostLikeCols, d.UpdatePostLikes},
		{"update_posts", sqlmodel.PostUpdateCols, d.UpdatePosts},
		{"upsert_likes", sqlmodel.LikeCols, d.UpsertLikes},
		{"insert_likes", sqlmodel.LikeCols, d.InsertLikes},
		{"update_likes", sqlmodel.LikeUpdateCols, d.UpdateLikes},
	} {
		n := sqlmodel.RowsPerStatement(d, m.cols)
		add("max_"+m.name, m.sql(n), n*m.cols)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

var placeholder = regexp.MustCompile(`@p(\d+)`)

// params returns the distinct parameter numbers a statement uses, in ascending order.
func params(sql string) []int {
	seen := map[int]bool{}
	var out []int
	for _, m := range placeholder.FindAllStringSubmatch(sql, -1) {
		n, _ := strconv.Atoi(m[1])
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	sort.Ints(out)
	return out
}

// TestStatementsMatchGolden pins the exact T-SQL of every statement; run with -update after a
// deliberate change and review the diff.
func TestStatementsMatchGolden(t *testing.T) {
	for _, s := range statements() {
		if strings.HasPrefix(s.name, "max_") {
			continue // thousands of placeholders; checked by TestParameterLimit instead
		}
		path := filepath.Join("testdata", s.name+".sql")
		got := fmt.Sprintf("-- %d parameters\n%s\n", s.args, s.sql)
		if *update {
			if err := os.MkdirAll("testdata", 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("%s: %v (run go test -update)", s.name, err)
			continue
		}
		if string(want) != got {
			t.Errorf("%s changed:\n got: %s\nwant: %s", s.name, got, want)
		}
	}
}

// TestArgumentsMatchPlaceholders checks that each statement uses exactly @p1..@pN for the N
// arguments the model sends with it: a stray or missing number is a runtime error on the server.
func TestArgumentsMatchPlaceholders(t *testing.T) {
	for _, s := range statements() {
		ps := params(s.sql)
		if len(ps) != s.args {
			t.Errorf("%s: %d distinct placeholders, sent with %d arguments", s.name, len(ps), s.args)
			continue
		}
		for i, p := range ps {
			if p != i+1 {
				t.Errorf("%s: placeholders %v are not @p1..@p%d", s.name, ps, s.args)
				break
			}
		}
	}
}

// TestParameterLimit checks that no statement, at the largest batch the model builds, passes
// SQL Server's limit of 2,100 parameters.
func TestParameterLimit(t *testing.T) {
	found := 0
	for _, s := range statements() {
		if s.args > 2100 {
			t.Errorf("%s: %d parameters, SQL Server allows 2100", s.name, s.args)
		}
		if strings.HasPrefix(s.name, "max_") {
			found++
		}
	}
	if found != 10 {
		t.Fatalf("%d maximal statements checked, want 10", found)
	}
}

// deny lists what SQLite or PostgreSQL accept and T-SQL does not (or reads differently).
var deny = []struct {
	why string
	re  *regexp.Regexp
}{
	{"LIMIT is not T-SQL (TOP or OFFSET/FETCH)", regexp.MustCompile(`(?i)\bLIMIT\b`)},
	{"ON CONFLICT is not T-SQL (MERGE)", regexp.MustCompile(`(?i)\bON\s+CONFLICT\b`)},
	{"RETURNING is not T-SQL (OUTPUT)", regexp.MustCompile(`(?i)\bRETURNING\b`)},
	{"? placeholders are not the sqlserver driver's (@pN)", regexp.MustCompile(`\?`)},
	{"$n is read as a money literal", regexp.MustCompile(`\$\d`)},
	{"TRUE/FALSE do not exist (BIT 1/0)", regexp.MustCompile(`(?i)\b(TRUE|FALSE)\b`)},
	{"CREATE ... IF NOT EXISTS is not T-SQL (guard with OBJECT_ID)", regexp.MustCompile(`(?i)\bCREATE\s+(UNIQUE\s+)?(TABLE|INDEX|VIEW)\s+IF\s+NOT\s+EXISTS\b`)},
	{"INSERT OR IGNORE/REPLACE is SQLite", regexp.MustCompile(`(?i)\bINSERT\s+OR\b`)},
	{"excluded. is an upsert alias of SQLite/PostgreSQL", regexp.MustCompile(`(?i)\bexcluded\.`)},
	{"AUTOINCREMENT is SQLite (IDENTITY)", regexp.MustCompile(`(?i)\bAUTOINCREMENT\b`)},
	{"backtick quoting is MySQL", regexp.MustCompile("`")},
}

func checkDenied(t *testing.T, name, sql string) {
	t.Helper()
	for _, d := range deny {
		if loc := d.re.FindStringIndex(sql); loc != nil {
			t.Errorf("%s: %s: ...%s...", name, d.why, sql[max(0, loc[0]-30):min(len(sql), loc[1]+30)])
		}
	}
}

// stripComments drops -- comments (goose annotations included): prose may name what T-SQL lacks.
func stripComments(sql string) string {
	var b strings.Builder
	for _, line := range strings.Split(sql, "\n") {
		if i := strings.Index(line, "--"); i >= 0 {
			line = line[:i]
		}
		b.WriteString(line + "\n")
	}
	return b.String()
}

func TestNoForeignSyntax(t *testing.T) {
	for _, s := range statements() {
		checkDenied(t, s.name, s.sql)
		if strings.HasPrefix(s.sql, "MERGE") && !strings.HasSuffix(s.sql, ";") {
			t.Errorf("%s: a MERGE must end with a semicolon", s.name)
		}
		if strings.HasPrefix(s.sql, "MERGE") && !strings.Contains(s.sql, "WITH (HOLDLOCK)") {
			t.Errorf("%s: a MERGE upsert needs HOLDLOCK against concurrent inserts", s.name)
		}
	}
	files, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil || len(files) == 0 {
		t.Fatalf("migrations: %v (%d files)", err, len(files))
	}
	for _, f := range files {
		b, err := migrations.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		body := stripComments(string(b))
		checkDenied(t, f, body)
		if regexp.MustCompile(`(?i)NVARCHAR\s*\(\s*MAX\s*\)[^,]*\bPRIMARY\s+KEY`).MatchString(body) {
			t.Errorf("%s: NVARCHAR(MAX) cannot be a key", f)
		}
		for _, m := range regexp.MustCompile(`(?i)CREATE\s+TABLE\s+(\S+)`).FindAllStringSubmatch(body, -1) {
			if !regexp.MustCompile(`(?i)IF\s+OBJECT_ID\(N'` + regexp.QuoteMeta(m[1]) + `'`).MatchString(body) {
				t.Errorf("%s: CREATE TABLE %s is not guarded by IF OBJECT_ID(...) IS NULL", f, m[1])
			}
		}
	}
}

// TestSameSchemaAsSQLite checks that every table and index of the SQLite migrations exists in the
// SQL Server ones; every statement exists for both because both implement sqlmodel.Dialect.
func TestSameSchemaAsSQLite(t *testing.T) {
	var _ sqlmodel.Dialect = dialect{}
	lite, mssql := readMigrations(t, os.DirFS(filepath.Join("..", "sqlite"))), readMigrations(t, migrations)
	objects := regexp.MustCompile(`(?i)CREATE\s+(TABLE|INDEX)\s+(?:IF\s+NOT\s+EXISTS\s+)?(?:dbo\.)?(\w+)`)
	names := func(sql string) map[string]bool {
		out := map[string]bool{}
		for _, m := range objects.FindAllStringSubmatch(stripComments(sql), -1) {
			out[strings.ToLower(m[1])+" "+m[2]] = true
		}
		return out
	}
	want, got := names(lite), names(mssql)
	for n := range want {
		if !got[n] {
			t.Errorf("SQL Server migrations lack %s", n)
		}
	}
	for n := range got {
		if !want[n] {
			t.Errorf("SQLite migrations lack %s", n)
		}
	}
	if len(want) < 8 {
		t.Fatalf("found only %v in the SQLite migrations", want)
	}
}

// readMigrations returns the text of every migration under fsys's migrations/, in order.
func readMigrations(t *testing.T, fsys fs.FS) string {
	t.Helper()
	files, err := fs.Glob(fsys, "migrations/*.sql")
	if err != nil || len(files) == 0 {
		t.Fatalf("migrations: %v (%d files)", err, len(files))
	}
	var b strings.Builder
	for _, f := range files {
		body, err := fs.ReadFile(fsys, f)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(body)
		b.WriteString("\n")
	}
	return b.String()
}

// TestDenyListCatchesOtherDialects keeps the deny list honest: each entry must fire on a
// statement that SQLite or PostgreSQL would accept.
func TestDenyListCatchesOtherDialects(t *testing.T) {
	foreign := []string{
		"SELECT id FROM posts LIMIT ?",
		"INSERT INTO t (a) VALUES (1) ON CONFLICT (a) DO NOTHING",
		"INSERT INTO t (a) VALUES (1) RETURNING a",
		"SELECT a FROM t WHERE b = ?",
		"SELECT a FROM t WHERE b = $1",
		"UPDATE t SET deleted = TRUE",
		"CREATE TABLE IF NOT EXISTS t (a INT)",
		"INSERT OR IGNORE INTO t (a) VALUES (1)",
		"UPDATE SET a = excluded.a",
		"CREATE TABLE t (a INTEGER PRIMARY KEY AUTOINCREMENT)",
		"SELECT `a` FROM t",
	}
	if len(foreign) != len(deny) {
		t.Fatalf("%d samples for %d deny rules", len(foreign), len(deny))
	}
	for i, s := range foreign {
		if !deny[i].re.MatchString(s) {
			t.Errorf("rule %q does not catch %q", deny[i].why, s)
		}
	}
}

var (
	tableRef = regexp.MustCompile(`(?i)\b(?:FROM|JOIN|INTO|UPDATE|MERGE)\s+([A-Za-z_][\w.]*)`)
	cteName  = regexp.MustCompile(`(?i)\b(?:WITH|,)\s*([A-Za-z_]\w*)\s+AS\s*\(`)
	aliasOf  = regexp.MustCompile(`(?i)\bAS\s+([A-Za-z_]\w*)`)
)

// TestTablesAreQualified: every table a statement names is schema-qualified (dbo.), as the
// migrations create them: an unqualified name resolves in the login's default schema, which on a
// shared server need not be dbo. Names of a statement's own CTEs and aliases are exempt.
func TestTablesAreQualified(t *testing.T) {
	for _, s := range statements() {
		own := map[string]bool{}
		for _, re := range []*regexp.Regexp{cteName, aliasOf} {
			for _, m := range re.FindAllStringSubmatch(s.sql, -1) {
				own[strings.ToLower(m[1])] = true
			}
		}
		for _, m := range tableRef.FindAllStringSubmatch(s.sql, -1) {
			name := m[1]
			if own[strings.ToLower(name)] || strings.EqualFold(name, "INTO") || strings.EqualFold(name, "SET") {
				continue
			}
			if !strings.HasPrefix(name, "dbo.") {
				t.Errorf("%s: table %s is not qualified with dbo.: %s", s.name, name, s.sql)
			}
		}
	}
}
