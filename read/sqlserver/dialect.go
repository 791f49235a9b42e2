package sqlserver

import (
	"fmt"
	"strings"

	"github.com/postgate/postgate/read"
	"github.com/postgate/postgate/read/internal/sqlmodel"
)

// dialect is the T-SQL text of the read model's statements. Every method is a pure function of
// its arguments; the golden tests in this package pin each one's text and parameter count.
type dialect struct{}

var _ sqlmodel.Dialect = dialect{}

// MaxParams stays under SQL Server's hard limit of 2,100 parameters per statement.
const MaxParams = 2000

func ph(i int) string { return fmt.Sprintf("@p%d", i) }

func list(first, n int) string { return sqlmodel.Placeholders(ph, first, n) }

const activeGen = "(SELECT active FROM dbo.generation WHERE id = 1)"

const postCols = "id, author, message, created_at, edited_at, likes, like_version, comment_count, version"

// dt casts a parameter to the column type: the driver sends time.Time as datetimeoffset, and a
// comparison of a datetime2 column with a datetimeoffset would convert the column and lose the index.
func dt(p string) string { return "CAST(" + p + " AS DATETIME2(7))" }

func (dialect) Name() string { return "sqlserver" }

func (dialect) MaxParams() int { return MaxParams }

// LockApply serialises projection transactions across processes, as SQLite's single writer does:
// Apply reads versions and then writes, which must not interleave with another Apply.
func (dialect) LockApply() string {
	// sp_getapplock reports a timeout (-1), a cancel (-2), a deadlock (-3) or a bad call (-999)
	// through its return code, not as an error: without the check Apply would go on unlocked.
	return "DECLARE @lock INT; EXEC @lock = sp_getapplock @Resource = N'postgate.read.apply', @LockMode = N'Exclusive', @LockOwner = N'Transaction', @LockTimeout = 30000; IF @lock < 0 THROW 51000, N'postgate: read-model apply lock not granted', 1;"
}

func (dialect) ActiveGen() string { return "SELECT active FROM dbo.generation WHERE id = 1;" }

func (dialect) SelectPosts(n int) string {
	return "SELECT id, version, deleted, likes, like_version, comment_count FROM dbo.posts WHERE gen = @p1 AND id IN (" + list(2, n) + ");"
}

func (dialect) SelectLikes(n int) string {
	return "SELECT l.post_id, l.user_id, l.version, l.liked FROM dbo.likes AS l JOIN (VALUES " +
		sqlmodel.Rows(ph, 2, n, sqlmodel.LikeKeyCols) + ") AS k (post_id, user_id)" +
		" ON l.post_id = k.post_id AND l.user_id = k.user_id WHERE l.gen = @p1;"
}

func (dialect) UpsertPosts(n int) string {
	return "MERGE dbo.posts WITH (HOLDLOCK) AS t USING (VALUES " + sqlmodel.Rows(ph, 1, n, sqlmodel.PostCols) + ")" +
		" AS s (gen, id, author, message, created_at, edited_at, likes, like_version, comment_count, version, deleted)" +
		" ON t.gen = s.gen AND t.id = s.id" +
		" WHEN MATCHED THEN UPDATE SET message = s.message, edited_at = " + dt("s.edited_at") + ", likes = s.likes," +
		" like_version = s.like_version, comment_count = s.comment_count, version = s.version, deleted = s.deleted" +
		" WHEN NOT MATCHED THEN INSERT (gen, " + postCols + ", deleted)" +
		" VALUES (s.gen, s.id, s.author, s.message, " + dt("s.created_at") + ", " + dt("s.edited_at") + "," +
		" s.likes, s.like_version, s.comment_count, s.version, s.deleted);"
}

// UpdatePosts writes only the columns that can change; a NULL message or edited_at keeps the
// stored value.
func (dialect) UpdatePosts(n int) string {
	return "UPDATE p SET message = COALESCE(v.message, p.message), edited_at = COALESCE(" + dt("v.edited_at") + ", p.edited_at)," +
		" likes = v.likes, like_version = v.like_version, comment_count = v.comment_count, version = v.version, deleted = v.deleted" +
		" FROM dbo.posts AS p JOIN (VALUES " + sqlmodel.Rows(ph, 1, n, sqlmodel.PostUpdateCols) + ")" +
		" AS v (gen, id, message, edited_at, likes, like_version, comment_count, version, deleted) ON p.gen = v.gen AND p.id = v.id;"
}

// UpdatePostLikes writes only the like columns, so only the likes index is maintained.
func (dialect) UpdatePostLikes(n int) string {
	return "UPDATE p SET likes = v.likes, like_version = v.like_version FROM dbo.posts AS p JOIN (VALUES " +
		sqlmodel.Rows(ph, 1, n, sqlmodel.PostLikeCols) + ") AS v (gen, id, likes, like_version)" +
		" ON p.gen = v.gen AND p.id = v.id;"
}

func (dialect) UpsertLikes(n int) string {
	return "MERGE dbo.likes WITH (HOLDLOCK) AS t USING (VALUES " + sqlmodel.Rows(ph, 1, n, sqlmodel.LikeCols) + ")" +
		" AS s (gen, post_id, user_id, version, liked) ON t.gen = s.gen AND t.post_id = s.post_id AND t.user_id = s.user_id" +
		" WHEN MATCHED THEN UPDATE SET version = s.version, liked = s.liked" +
		" WHEN NOT MATCHED THEN INSERT (gen, post_id, user_id, version, liked) VALUES (s.gen, s.post_id, s.user_id, s.version, s.liked);"
}

func (dialect) InsertLikes(n int) string {
	return "INSERT INTO dbo.likes (gen, post_id, user_id, version, liked) VALUES " + sqlmodel.Rows(ph, 1, n, sqlmodel.LikeCols) + ";"
}

func (dialect) UpdateLikes(n int) string {
	return "UPDATE l SET version = v.version, liked = v.liked FROM dbo.likes AS l JOIN (VALUES " +
		sqlmodel.Rows(ph, 1, n, sqlmodel.LikeUpdateCols) + ") AS v (gen, post_id, user_id, version, liked, prev_version, prev_liked)" +
		" ON l.gen = v.gen AND l.post_id = v.post_id AND l.user_id = v.user_id" +
		" AND l.version = v.prev_version AND l.liked = v.prev_liked;"
}

func (dialect) InsertComment() string {
	return "INSERT INTO dbo.comments (gen, post_id, id, author, text, created_at)" +
		" SELECT @p1, @p2, @p3, @p4, @p5, " + dt("@p6") +
		" WHERE NOT EXISTS (SELECT 1 FROM dbo.comments WITH (UPDLOCK, HOLDLOCK) WHERE gen = @p1 AND post_id = @p2 AND id = @p3);"
}

func (dialect) UpdateComment() string {
	return "UPDATE dbo.comments SET text = @p1, edited_at = " + dt("@p2") + " WHERE gen = @p3 AND post_id = @p4 AND id = @p5;"
}

func (dialect) DeleteComment() string {
	return "DELETE FROM dbo.comments WHERE gen = @p1 AND post_id = @p2 AND id = @p3;"
}

func (dialect) Post() string {
	return "SELECT " + postCols + " FROM dbo.posts WHERE gen = " + activeGen + " AND deleted = 0 AND id = @p1;"
}

// Posts pages with TOP and a keyset: T-SQL has no row-value comparison, so the keyset is spelled
// out as (a < x OR (a = x AND id < y)).
func (dialect) Posts(f read.PostFilter, after *sqlmodel.Cursor) (string, []any) {
	var args []any
	next := func(v any) string {
		args = append(args, v)
		return ph(len(args))
	}
	top := next(sqlmodel.ClampFirst(f.First) + 1)
	where := []string{"gen = " + activeGen, "deleted = 0"}
	if f.Author != "" {
		where = append(where, "author = "+next(f.Author))
	}
	if f.MinLikes > 0 {
		where = append(where, "likes >= "+next(f.MinLikes))
	}
	if f.WithComments {
		where = append(where, "comment_count > 0")
	}
	var order string
	switch f.Order {
	case read.Oldest:
		order = "created_at, id"
		if after != nil {
			t, id := dt(next(after.At)), next(after.ID)
			where = append(where, "(created_at > "+t+" OR (created_at = "+t+" AND id > "+id+"))")
		}
	case read.MostLiked:
		order = "likes DESC, id"
		if after != nil {
			l, id := next(after.Likes), next(after.ID)
			where = append(where, "(likes < "+l+" OR (likes = "+l+" AND id > "+id+"))")
		}
	default:
		order = "created_at DESC, id DESC"
		if after != nil {
			t, id := dt(next(after.At)), next(after.ID)
			where = append(where, "(created_at < "+t+" OR (created_at = "+t+" AND id < "+id+"))")
		}
	}
	return fmt.Sprintf("SELECT TOP (%s) %s FROM dbo.posts WHERE %s ORDER BY %s;", top, postCols, strings.Join(where, " AND "), order), args
}

// CommentPages numbers the keys of the requested comments from the comments_by_time index
// (ROW_NUMBER per post) and joins back for the rows within the limit only, so that a post with
// thousands of long comments costs a walk of small index entries, not of its texts. T-SQL has no
// row-value comparison, so the keyset is spelled out.
func (dialect) CommentPages(n int, after bool) string {
	next := n + 1
	keyset := ""
	if after {
		t, id := dt(ph(next)), ph(next+1)
		keyset = " AND (created_at > " + t + " OR (created_at = " + t + " AND id > " + id + "))"
		next += 2
	}
	return "SELECT c.id, c.post_id, c.author, c.text, c.created_at, c.edited_at FROM" +
		" (SELECT gen, post_id, id, ROW_NUMBER() OVER (PARTITION BY post_id ORDER BY created_at, id) AS n FROM dbo.comments" +
		" WHERE gen = " + activeGen + " AND post_id IN (" + list(1, n) + ")" + keyset + ") AS w" +
		" JOIN dbo.comments AS c ON c.gen = w.gen AND c.post_id = w.post_id AND c.id = w.id" +
		" JOIN dbo.posts AS p ON p.gen = c.gen AND p.id = c.post_id AND p.deleted = 0" +
		" WHERE w.n <= " + ph(next) + " ORDER BY c.post_id, c.created_at, c.id;"
}

func (dialect) LikedBy(n int) string {
	return "SELECT post_id FROM dbo.likes WHERE gen = " + activeGen + " AND liked = 1 AND user_id = @p1 AND post_id IN (" + list(2, n) + ");"
}

func (dialect) StreamVersion() string {
	return "SELECT version FROM dbo.posts WHERE gen = " + activeGen + " AND id = @p1;"
}

func (dialect) LikeVersion() string {
	return "SELECT version FROM dbo.likes WHERE gen = " + activeGen + " AND post_id = @p1 AND user_id = @p2;"
}

// NextGen is one statement: OUTPUT returns the reserved number from the same atomic update.
func (dialect) NextGen() []string {
	return []string{"UPDATE dbo.generation SET next_gen = next_gen + 1 OUTPUT deleted.next_gen WHERE id = 1;"}
}

func (dialect) SetActive() string { return "UPDATE dbo.generation SET active = @p1 WHERE id = 1;" }

// DeleteGen deletes in chunks (the caller repeats it until it deletes nothing): one DELETE of a
// whole generation would escalate to a table lock that blocks the live generation's readers.
func (dialect) DeleteGen(table string) string {
	return "DELETE TOP (5000) FROM dbo." + table + " WHERE gen = @p1;"
}

func (dialect) DeleteInactive(table string) string {
	return "DELETE FROM dbo." + table + " WHERE gen <> " + activeGen + ";"
}

func (dialect) DumpPosts() string {
	return "SELECT " + postCols + ", deleted FROM dbo.posts WHERE gen = " + activeGen + " ORDER BY id;"
}

func (dialect) DumpComments() string {
	return "SELECT id, post_id, author, text, created_at, edited_at FROM dbo.comments WHERE gen = " + activeGen + " ORDER BY post_id, id;"
}

func (dialect) DumpLikes() string {
	return "SELECT post_id, user_id, version, liked FROM dbo.likes WHERE gen = " + activeGen + " ORDER BY post_id, user_id;"
}

func (dialect) AppliedPosition() string {
	return "SELECT position FROM dbo.applied_position WHERE id = 1;"
}

func (dialect) SaveAppliedPosition() string {
	return "UPDATE dbo.applied_position SET position = @p1 WHERE id = 1 AND position < @p2;"
}

func (dialect) DumpPost() string {
	return "SELECT " + postCols + ", deleted FROM dbo.posts WHERE gen = @p1 AND id = @p2;"
}

func (dialect) DumpPostComments() string {
	return "SELECT id, post_id, author, text, created_at, edited_at FROM dbo.comments WHERE gen = @p1 AND post_id = @p2 ORDER BY id;"
}

func (dialect) DumpPostLikes() string {
	return "SELECT post_id, user_id, version, liked FROM dbo.likes WHERE gen = @p1 AND post_id = @p2 ORDER BY user_id;"
}

func (dialect) DeletePost(table string) string {
	return "DELETE FROM dbo." + table + " WHERE gen = @p1 AND " + postKeyOf(table) + " = @p2;"
}

// postKeyOf names the column that holds a row's post id: posts are keyed by their own id.
func postKeyOf(table string) string {
	if table == "posts" {
		return "id"
	}
	return "post_id"
}
