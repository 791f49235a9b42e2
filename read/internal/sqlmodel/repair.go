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

// AppliedPosition returns the recorded catch-up position, 0 when none is. See read.Positions.
func (m *Model) AppliedPosition(ctx context.Context) (int64, error) {
	var p int64
	err := m.reader.GetContext(ctx, &p, m.d.AppliedPosition())
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
	if _, err := m.writer.ExecContext(ctx, m.d.SaveAppliedPosition(), p, p); err != nil {
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
	p, err := scanStored(tx.QueryRowxContext(ctx, m.d.DumpPost(), gen, postID))
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return st, fmt.Errorf("dump post %s: %w", postID, err)
	default:
		st.Posts = append(st.Posts, p)
		st.Streams[write.PostStream(p.ID)] = p.Version
	}
	rows, err := tx.QueryxContext(ctx, m.d.DumpPostComments(), gen, postID)
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
	if rows, err = tx.QueryxContext(ctx, m.d.DumpPostLikes(), gen, postID); err != nil {
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

// ReplacePost deletes the post's rows and applies what load returns, in one transaction that
// has taken the apply lock before load runs. See read.Repairer.
func (m *Model) ReplacePost(ctx context.Context, postID string, load func(ctx context.Context, streams []string) ([]write.Event, error)) ([]read.Change, error) {
	if err := m.prepare(ctx); err != nil {
		return nil, err
	}
	return m.applyTx(ctx, 0, nil, nil, nil, &reset{postID: postID, load: load})
}

// reset is a ReplacePost within applyTx: the post's rows are deleted and its events loaded once
// the transaction holds the apply lock.
type reset struct {
	postID string
	load   func(ctx context.Context, streams []string) ([]write.Event, error)
}

// events deletes the post's rows of generation gen within tx and returns its events, decoded.
func (r *reset) events(ctx context.Context, m *Model, tx *sqlx.Tx, gen int64) ([]write.Event, []write.Payload, error) {
	// The streams the rows hold now, under the lock: a like applied by a projector a moment ago
	// is among them, so its row is rewritten, not lost.
	streams := []string{write.PostStream(r.postID)}
	rows, err := tx.QueryxContext(ctx, m.d.DumpPostLikes(), gen, r.postID)
	if err != nil {
		return nil, nil, fmt.Errorf("replace post %s: likes: %w", r.postID, err)
	}
	for rows.Next() {
		var post, user string
		var v int64
		var liked bool
		if err := rows.Scan(&post, &user, &v, &liked); err != nil {
			rows.Close()
			return nil, nil, fmt.Errorf("replace post %s: likes: %w", r.postID, err)
		}
		streams = append(streams, write.LikeStream(post, user))
	}
	if err := closeRows(rows); err != nil {
		return nil, nil, fmt.Errorf("replace post %s: likes: %w", r.postID, err)
	}
	events, err := r.load(ctx, streams)
	if err != nil {
		return nil, nil, fmt.Errorf("replace post %s: load: %w", r.postID, err)
	}
	payloads := make([]write.Payload, len(events))
	for i, e := range events {
		if e.PostID != r.postID {
			return nil, nil, fmt.Errorf("replace post %s: event %s belongs to post %s", r.postID, e.ID, e.PostID)
		}
		if payloads[i], err = write.Decode(e); err != nil {
			return nil, nil, fmt.Errorf("replace post %s: %w", r.postID, err)
		}
	}
	for _, t := range Tables {
		if _, err := tx.ExecContext(ctx, m.d.DeletePost(t), gen, r.postID); err != nil {
			return nil, nil, fmt.Errorf("replace post %s: delete %s: %w", r.postID, t, err)
		}
	}
	return events, payloads, nil
}
