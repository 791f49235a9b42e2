package sqlite

import (
	"fmt"
	"strings"

	"github.com/postgate/postgate/read"
	"github.com/postgate/postgate/read/internal/sqlmodel"
)

// dialect is the SQLite text of the read model's statements.
type dialect struct{}

var _ sqlmodel.Dialect = dialect{}

func ph(int) string { return "?" }

func list(n int) string { return sqlmodel.Placeholders(ph, 1, n) }

const activeGen = "(SELECT active FROM generation WHERE id = 1)"

const postCols = "id, author, message, created_at, edited_at, likes, like_version, comment_count, version"

func (dialect) Name() string { return "sqlite" }

// MaxParams stays well under SQLite's 32,766 so one statement's text remains small.
func (dialect) MaxParams() int { return 9999 }

// LockApply is empty: the writer's IMMEDIATE transactions already take SQLite's write lock.
func (dialect) LockApply() string { return "" }

func (dialect) ActiveGen() string { return "SELECT active FROM generation WHERE id = 1" }

func (dialect) SelectPosts(n int) string {
	return "SELECT id, version, deleted, likes, like_version, comment_count FROM posts WHERE gen = ? AND id IN (" + list(n) + ")"
}

func (dialect) SelectLikes(n int) string {
	return "SELECT post_id, user_id, version, liked FROM likes WHERE gen = ? AND (post_id, user_id) IN (VALUES " +
		sqlmodel.Rows(ph, 1, n, sqlmodel.LikeKeyCols) + ")"
}

func (dialect) UpsertPosts(n int) string {
	return "INSERT INTO posts (gen, " + postCols + ", deleted) VALUES " + sqlmodel.Rows(ph, 1, n, sqlmodel.PostCols) +
		" ON CONFLICT (gen, id) DO UPDATE SET message = excluded.message, edited_at = excluded.edited_at," +
		" likes = excluded.likes, like_version = excluded.like_version, comment_count = excluded.comment_count," +
		" version = excluded.version, deleted = excluded.deleted"
}

// UpdatePosts uses UPDATE ... FROM so that only the columns that can change are written.
func (dialect) UpdatePosts(n int) string {
	return "UPDATE posts SET message = COALESCE(v.column3, posts.message), edited_at = COALESCE(v.column4, posts.edited_at)," +
		" likes = v.column5, like_version = v.column6, comment_count = v.column7, version = v.column8, deleted = v.column9" +
		" FROM (VALUES " + sqlmodel.Rows(ph, 1, n, sqlmodel.PostUpdateCols) + ") AS v WHERE posts.gen = v.column1 AND posts.id = v.column2"
}

// UpdatePostLikes uses UPDATE ... FROM so that only the like columns, and so only the likes index,
// are written.
func (dialect) UpdatePostLikes(n int) string {
	return "UPDATE posts SET likes = v.column3, like_version = v.column4 FROM (VALUES " +
		sqlmodel.Rows(ph, 1, n, sqlmodel.PostLikeCols) + ") AS v WHERE posts.gen = v.column1 AND posts.id = v.column2"
}

func (dialect) UpsertLikes(n int) string {
	return "INSERT INTO likes (gen, post_id, user_id, version, liked) VALUES " + sqlmodel.Rows(ph, 1, n, sqlmodel.LikeCols) +
		" ON CONFLICT (gen, post_id, user_id) DO UPDATE SET version = excluded.version, liked = excluded.liked"
}

func (dialect) InsertLikes(n int) string {
	return "INSERT INTO likes (gen, post_id, user_id, version, liked) VALUES " + sqlmodel.Rows(ph, 1, n, sqlmodel.LikeCols)
}

func (dialect) UpdateLikes(n int) string {
	return "UPDATE likes SET version = v.column4, liked = v.column5 FROM (VALUES " + sqlmodel.Rows(ph, 1, n, sqlmodel.LikeUpdateCols) +
		") AS v WHERE likes.gen = v.column1 AND likes.post_id = v.column2 AND likes.user_id = v.column3" +
		" AND likes.version = v.column6 AND likes.liked = v.column7"
}

func (dialect) InsertComment() string {
	return "INSERT INTO comments (gen, post_id, id, author, text, created_at) VALUES (?, ?, ?, ?, ?, ?)" +
		" ON CONFLICT (gen, post_id, id) DO NOTHING"
}

func (dialect) UpdateComment() string {
	return "UPDATE comments SET text = ?, edited_at = ? WHERE gen = ? AND post_id = ? AND id = ?"
}

func (dialect) DeleteComment() string {
	return "DELETE FROM comments WHERE gen = ? AND post_id = ? AND id = ?"
}

func (dialect) Post() string {
	return "SELECT " + postCols + " FROM posts WHERE gen = " + activeGen + " AND deleted = 0 AND id = ?"
}

func (dialect) Posts(f read.PostFilter, after *sqlmodel.Cursor) (string, []any) {
	where := []string{"gen = " + activeGen, "deleted = 0"}
	var args []any
	if f.Author != "" {
		where = append(where, "author = ?")
		args = append(args, f.Author)
	}
	if f.MinLikes > 0 {
		where = append(where, "likes >= ?")
		args = append(args, f.MinLikes)
	}
	if f.WithComments {
		where = append(where, "comment_count > 0")
	}
	var order string
	switch f.Order {
	case read.Oldest:
		order = "created_at, id"
		if after != nil {
			where = append(where, "(created_at, id) > (?, ?)")
			args = append(args, after.At, after.ID)
		}
	case read.MostLiked:
		order = "likes DESC, id"
		if after != nil {
			where = append(where, "(likes < ? OR (likes = ? AND id > ?))")
			args = append(args, after.Likes, after.Likes, after.ID)
		}
	default:
		order = "created_at DESC, id DESC"
		if after != nil {
			where = append(where, "(created_at, id) < (?, ?)")
			args = append(args, after.At, after.ID)
		}
	}
	args = append(args, sqlmodel.ClampFirst(f.First)+1)
	return fmt.Sprintf("SELECT %s FROM posts WHERE %s ORDER BY %s LIMIT ?", postCols, strings.Join(where, " AND "), order), args
}

// CommentPages numbers the keys of the requested comments from the comments_by_time index
// (ROW_NUMBER per post) and joins back for the rows within the limit only, so that a post with
// thousands of long comments costs a walk of small index entries, not of its texts.
func (dialect) CommentPages(n int, after bool) string {
	keyset := ""
	if after {
		keyset = " AND (created_at, id) > (?, ?)"
	}
	return "SELECT c.id, c.post_id, c.author, c.text, c.created_at, c.edited_at FROM" +
		" (SELECT gen, post_id, id, ROW_NUMBER() OVER (PARTITION BY post_id ORDER BY created_at, id) AS n FROM comments" +
		" WHERE gen = " + activeGen + " AND post_id IN (" + list(n) + ")" + keyset + ") AS w" +
		" JOIN comments c ON c.gen = w.gen AND c.post_id = w.post_id AND c.id = w.id" +
		" JOIN posts p ON p.gen = c.gen AND p.id = c.post_id AND p.deleted = 0" +
		" WHERE w.n <= ? ORDER BY c.post_id, c.created_at, c.id"
}

func (dialect) LikedBy(n int) string {
	return "SELECT post_id FROM likes WHERE gen = " + activeGen + " AND liked = 1 AND user_id = ? AND post_id IN (" + list(n) + ")"
}

func (dialect) StreamVersion() string {
	return "SELECT version FROM posts WHERE gen = " + activeGen + " AND id = ?"
}

func (dialect) LikeVersion() string {
	return "SELECT version FROM likes WHERE gen = " + activeGen + " AND post_id = ? AND user_id = ?"
}

func (dialect) NextGen() []string {
	return []string{
		"UPDATE generation SET next_gen = next_gen + 1 WHERE id = 1",
		"SELECT next_gen - 1 FROM generation WHERE id = 1",
	}
}

func (dialect) SetActive() string { return "UPDATE generation SET active = ? WHERE id = 1" }

// keyOf lists each table's primary key after gen: the tables have no rowid, so a chunk of a
// generation is picked by key.
var keyOf = map[string]string{"posts": "id", "comments": "post_id, id", "likes": "post_id, user_id"}

// DeleteGen deletes a chunk of 5,000 rows of a generation (the caller repeats it until it deletes
// nothing), so that dropping a large generation never holds the write lock for long while the
// live projector waits. ?1 is the generation, used twice.
func (dialect) DeleteGen(table string) string {
	key := keyOf[table]
	return "DELETE FROM " + table + " WHERE gen = ?1 AND (" + key + ") IN (SELECT " + key + " FROM " + table + " WHERE gen = ?1 LIMIT 5000)"
}

func (dialect) DeleteInactive(table string) string {
	return "DELETE FROM " + table + " WHERE gen <> " + activeGen
}

func (dialect) DumpPosts() string {
	return "SELECT " + postCols + ", deleted FROM posts WHERE gen = " + activeGen + " ORDER BY id"
}

func (dialect) DumpComments() string {
	return "SELECT id, post_id, author, text, created_at, edited_at FROM comments WHERE gen = " + activeGen + " ORDER BY post_id, id"
}

func (dialect) DumpLikes() string {
	return "SELECT post_id, user_id, version, liked FROM likes WHERE gen = " + activeGen + " ORDER BY post_id, user_id"
}

func (dialect) AppliedPosition() string { return "SELECT position FROM applied_position WHERE id = 1" }

func (dialect) SaveAppliedPosition() string {
	return "UPDATE applied_position SET position = ? WHERE id = 1 AND position < ?"
}

func (dialect) DumpPost() string {
	return "SELECT " + postCols + ", deleted FROM posts WHERE gen = ? AND id = ?"
}

func (dialect) DumpPostComments() string {
	return "SELECT id, post_id, author, text, created_at, edited_at FROM comments WHERE gen = ? AND post_id = ? ORDER BY id"
}

func (dialect) DumpPostLikes() string {
	return "SELECT post_id, user_id, version, liked FROM likes WHERE gen = ? AND post_id = ? ORDER BY user_id"
}

func (dialect) DeletePost(table string) string {
	return "DELETE FROM " + table + " WHERE gen = ? AND " + postKeyOf(table) + " = ?"
}

// postKeyOf names the column that holds a row's post id: posts are keyed by their own id.
func postKeyOf(table string) string {
	if table == "posts" {
		return "id"
	}
	return "post_id"
}
