package sqlmodel

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"

	"github.com/jmoiron/sqlx"

	"github.com/postgate/postgate/read"
	"github.com/postgate/postgate/write"
)

// The statements of this file are plain SQL that both dialects accept once rebound to their
// placeholders: they name the tables without a schema (SQL Server resolves them in dbo) and take
// the generation as an argument.
const (
	selectAppliedPosition = "SELECT position FROM applied_position WHERE id = 1"
	updateAppliedPosition = "UPDATE applied_position SET position = ? WHERE id = 1 AND position < ?"
	selectPostRow         = "SELECT id, author, message, created_at, edited_at, likes, like_version, comment_count, version, deleted FROM posts WHERE gen = ? AND id = ?"
	selectPostComments    = "SELECT id, post_id, author, text, created_at, edited_at FROM comments WHERE gen = ? AND post_id = ? ORDER BY id"
	selectPostLikes       = "SELECT post_id, user_id, version, liked FROM likes WHERE gen = ? AND post_id = ? ORDER BY user_id"
	deletePostRow         = "DELETE FROM posts WHERE gen = ? AND id = ?"
	deletePostComments    = "DELETE FROM comments WHERE gen = ? AND post_id = ?"
	deletePostLikes       = "DELETE FROM likes WHERE gen = ? AND post_id = ?"
)

func (m *Model) rebind(q string) string { return sqlx.Rebind(sqlx.BindType(m.d.Name()), q) }

// AppliedPosition returns the recorded catch-up position, 0 when none is. See read.Positions.
func (m *Model) AppliedPosition(ctx context.Context) (int64, error) {
	var p int64
	err := m.reader.GetContext(ctx, &p, m.rebind(selectAppliedPosition))
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("applied position: %w", err)
	}
	return p, nil
}

// SaveAppliedPosition moves the recorded position forward to p. See read.Positions.
func (m *Model) SaveAppliedPosition(ctx context.Context, p int64) error {
	if _, err := m.writer.ExecContext(ctx, m.rebind(updateAppliedPosition), p, p); err != nil {
		return fmt.Errorf("save applied position %d: %w", p, err)
	}
	return nil
}

// DumpPost lists one post of the active generation in one read transaction. See read.Repairer.
func (m *Model) DumpPost(ctx context.Context, postID string) (read.State, error) {
	st := read.State{Streams: map[string]int64{}}
	tx, err := m.reader.BeginTxx(ctx, nil)
	if err != nil {
		return st, fmt.Errorf("dump post %s: begin: %w", postID, err)
	}
	defer tx.Rollback() //nolint:errcheck // read-only; nothing to undo
	var gen int64
	if err := tx.GetContext(ctx, &gen, m.d.ActiveGen()); err != nil {
		return st, fmt.Errorf("dump post %s: active generation: %w", postID, err)
	}
	p, err := scanStored(tx.QueryRowxContext(ctx, m.rebind(selectPostRow), gen, postID))
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return st, fmt.Errorf("dump post %s: %w", postID, err)
	default:
		st.Posts = append(st.Posts, p)
		st.Streams[write.PostStream(p.ID)] = p.Version
	}
	rows, err := tx.QueryxContext(ctx, m.rebind(selectPostComments), gen, postID)
	if err != nil {
		return st, fmt.Errorf("dump post %s comments: %w", postID, err)
	}
	for rows.Next() {
		c, err := scanComment(rows)
		if err != nil {
			rows.Close()
			return st, fmt.Errorf("dump post %s comments: %w", postID, err)
		}
		st.Comments = append(st.Comments, c)
	}
	if err := closeRows(rows); err != nil {
		return st, fmt.Errorf("dump post %s comments: %w", postID, err)
	}
	if rows, err = tx.QueryxContext(ctx, m.rebind(selectPostLikes), gen, postID); err != nil {
		return st, fmt.Errorf("dump post %s likes: %w", postID, err)
	}
	for rows.Next() {
		var l read.Like
		var v int64
		var liked bool
		if err := rows.Scan(&l.PostID, &l.User, &v, &liked); err != nil {
			rows.Close()
			return st, fmt.Errorf("dump post %s likes: %w", postID, err)
		}
		st.Streams[write.LikeStream(l.PostID, l.User)] = v
		if liked {
			st.Likes = append(st.Likes, l)
		}
	}
	if err := closeRows(rows); err != nil {
		return st, fmt.Errorf("dump post %s likes: %w", postID, err)
	}
	sort.Slice(st.Comments, func(i, j int) bool { return st.Comments[i].ID < st.Comments[j].ID })
	return st, nil
}

// ReplacePost deletes the post's rows and applies events in one transaction. See read.Repairer.
func (m *Model) ReplacePost(ctx context.Context, postID string, events []write.Event) ([]read.Change, error) {
	payloads := make([]write.Payload, len(events))
	for i, e := range events {
		if e.PostID != postID {
			return nil, fmt.Errorf("replace post %s: event %s belongs to post %s", postID, e.ID, e.PostID)
		}
		var err error
		if payloads[i], err = write.Decode(e); err != nil {
			return nil, fmt.Errorf("replace post %s: %w", postID, err)
		}
	}
	if err := m.prepare(ctx); err != nil {
		return nil, err
	}
	return m.applyTx(ctx, 0, events, payloads, nil, postID)
}

// deletePost deletes every row of a post in generation gen, within tx.
func (m *Model) deletePost(ctx context.Context, tx *sqlx.Tx, gen int64, postID string) error {
	for _, q := range []string{deletePostRow, deletePostComments, deletePostLikes} {
		if _, err := tx.ExecContext(ctx, m.rebind(q), gen, postID); err != nil {
			return fmt.Errorf("replace post %s: delete rows: %w", postID, err)
		}
	}
	return nil
}
