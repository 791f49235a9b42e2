package sqlmodel

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/postgate/postgate/read"
	"github.com/postgate/postgate/write"
)

// Model is a read.Model over two pools: writer for Apply and generation changes (SQLite needs a
// single writer connection; SQL Server may share the pool) and reader for queries.
type Model struct {
	d      Dialect
	writer *sqlx.DB
	reader *sqlx.DB

	mu    sync.Mutex
	stmts map[string]*sqlx.Stmt // the apply path's statements, prepared on writer once
}

var (
	_ read.Model       = (*Model)(nil)
	_ read.Inspector   = (*Model)(nil)
	_ read.Generations = (*Model)(nil)
)

// New returns a Model. writer and reader may be the same pool. Close closes both.
func New(d Dialect, writer, reader *sqlx.DB) *Model {
	return &Model{d: d, writer: writer, reader: reader}
}

// Writer returns the pool Apply uses, for adapters that run migrations or benchmarks on it.
func (m *Model) Writer() *sqlx.DB { return m.writer }

// Ping checks both pools.
func (m *Model) Ping(ctx context.Context) error {
	if err := m.writer.PingContext(ctx); err != nil {
		return fmt.Errorf("ping read model writer: %w", err)
	}
	if err := m.reader.PingContext(ctx); err != nil {
		return fmt.Errorf("ping read model reader: %w", err)
	}
	return nil
}

// Close closes both pools.
func (m *Model) Close() error {
	m.mu.Lock()
	var err error
	for _, st := range m.stmts {
		err = errors.Join(err, st.Close())
	}
	m.stmts = nil
	m.mu.Unlock()
	err = errors.Join(err, m.writer.Close())
	if m.reader != m.writer {
		err = errors.Join(err, m.reader.Close())
	}
	return err
}

// Apply applies events to the active generation. See read.Model.
func (m *Model) Apply(ctx context.Context, events []write.Event) ([]read.Change, error) {
	return m.apply(ctx, 0, events)
}

// ApplyTo applies events to generation gen. See read.Generations.
func (m *Model) ApplyTo(ctx context.Context, gen int64, events []write.Event) ([]read.Change, error) {
	if gen <= 0 {
		return nil, fmt.Errorf("apply to generation %d: not a generation", gen)
	}
	return m.apply(ctx, gen, events)
}

// apply runs one projection transaction; gen 0 means the active generation, read inside the
// transaction so that a concurrent Activate cannot split a batch across generations.
func (m *Model) apply(ctx context.Context, gen int64, events []write.Event) (changes []read.Change, err error) {
	if len(events) == 0 {
		return nil, nil
	}
	// Decoding before the transaction keeps a malformed event from holding the write lock.
	payloads := make([]write.Payload, len(events))
	for i, e := range events {
		if payloads[i], err = write.Decode(e); err != nil {
			return nil, fmt.Errorf("apply: %w", err)
		}
	}
	// Preparing needs the writer connection, so it must happen before the transaction takes it.
	if err := m.prepare(ctx); err != nil {
		return nil, err
	}
	if assumed := assumeLikes(events, payloads); assumed != nil {
		changes, err := m.applyTx(ctx, gen, events, payloads, assumed, nil)
		if !errors.Is(err, errAssumption) {
			return changes, err
		}
		// The like rows were not where the stream versions put them (a redelivery or a gap):
		// the transaction was rolled back; read them and decide exactly.
	}
	return m.applyTx(ctx, gen, events, payloads, nil, nil)
}

// errAssumption reports that a like row was not in the state assumeLikes inferred.
var errAssumption = errors.New("like rows differ from the assumed state")

// assumeLikes infers, from the events alone, the state each like stream of the batch must be in
// before it: a like stream alternates liked and unliked (the write model makes a repeat a no-op),
// so an event at version v follows version v-1 in the opposite state. With that, Apply need not
// read the like rows: it writes them on the condition that they are in the inferred state, and
// falls back to reading them when a row is not. It returns nil when the batch itself breaks the
// pattern (then reading is needed anyway).
func assumeLikes(events []write.Event, payloads []write.Payload) map[read.Like]likeState {
	var assumed map[read.Like]likeState
	last := map[read.Like]likeState{}
	for i, e := range events {
		user, liked, ok := likeOf(payloads[i])
		if !ok {
			continue
		}
		if assumed == nil {
			assumed = map[read.Like]likeState{}
		}
		key := read.Like{PostID: e.PostID, User: user}
		prev, seen := last[key]
		switch {
		case !seen && (e.Version < 1 || e.Version == 1 && !liked):
			return nil
		case !seen:
			assumed[key] = likeState{version: e.Version - 1, liked: !liked}
		case e.Version != prev.version+1 || liked == prev.liked:
			return nil
		}
		last[key] = likeState{version: e.Version, liked: liked}
	}
	return assumed
}

// applyTx runs one projection transaction. With assumed like states it reads no like rows and
// fails with errAssumption, after rolling back, when a row is not in its assumed state. With rs
// set (ReplacePost), events are not given: the post's rows are deleted and its events loaded
// within the transaction, after the apply lock.
func (m *Model) applyTx(ctx context.Context, gen int64, events []write.Event, payloads []write.Payload, assumed map[read.Like]likeState, rs *reset) (changes []read.Change, err error) {
	tx, err := m.writer.BeginTxx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("apply: begin: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback() // the error that made us roll back is the one worth returning
		}
	}()
	if err = m.lock(ctx, tx); err != nil {
		return nil, fmt.Errorf("apply: %w", err)
	}
	if gen == 0 {
		if err = tx.GetContext(ctx, &gen, m.d.ActiveGen()); err != nil {
			return nil, fmt.Errorf("apply: active generation: %w", err)
		}
	}
	if rs != nil {
		if events, payloads, err = rs.events(ctx, m, tx, gen); err != nil {
			return nil, err
		}
	}
	b, err := m.load(ctx, tx, gen, events, payloads, assumed == nil)
	if err != nil {
		return nil, err
	}
	if assumed != nil {
		b.assumed = assumed
		for k, st := range assumed {
			b.likes[k] = &likeState{version: st.version, liked: st.liked}
		}
	}
	if err = b.fold(events, payloads); err != nil {
		if assumed != nil {
			return nil, errAssumption // a gap under an assumption may be no gap at all
		}
		return nil, err
	}
	if err = m.store(ctx, tx, gen, b); err != nil {
		return nil, err
	}
	if err = tx.Commit(); err != nil {
		return nil, fmt.Errorf("apply: commit: %w", err)
	}
	return b.changes(), nil
}

// load reads what the batch's events need: the posts (whose versions are their streams') and the
// like stream rows.
func (m *Model) load(ctx context.Context, tx *sqlx.Tx, gen int64, events []write.Event, payloads []write.Payload, withLikes bool) (*batch, error) {
	b := newBatch()
	var posts []string
	var pairs []read.Like
	seenP, seenL := map[string]bool{}, map[read.Like]bool{}
	for i, e := range events {
		if !seenP[e.PostID] {
			seenP[e.PostID] = true
			posts = append(posts, e.PostID)
		}
		if user, _, ok := likeOf(payloads[i]); ok && withLikes {
			if l := (read.Like{PostID: e.PostID, User: user}); !seenL[l] {
				seenL[l] = true
				pairs = append(pairs, l)
			}
		}
	}
	for _, c := range cut(len(posts), Shapes(m.d, 1, 1)) {
		rows, err := m.query(ctx, tx, m.d.SelectPosts(c[1]-c[0]), withGen(gen, posts[c[0]:c[1]])...)
		if err != nil {
			return nil, fmt.Errorf("apply: load posts: %w", err)
		}
		for rows.Next() {
			p := &postState{loaded: true}
			if err := rows.Scan(&p.ID, &p.Version, &p.Deleted, &p.Likes, &p.LikeVersion, &p.CommentCount); err != nil {
				rows.Close()
				return nil, fmt.Errorf("apply: scan post: %w", err)
			}
			b.posts[p.ID] = p
		}
		if err := closeRows(rows); err != nil {
			return nil, fmt.Errorf("apply: load posts: %w", err)
		}
	}
	for _, c := range cut(len(pairs), Shapes(m.d, LikeKeyCols, 1)) {
		args := []any{gen}
		for _, l := range pairs[c[0]:c[1]] {
			args = append(args, l.PostID, l.User)
		}
		rows, err := m.query(ctx, tx, m.d.SelectLikes(c[1]-c[0]), args...)
		if err != nil {
			return nil, fmt.Errorf("apply: load likes: %w", err)
		}
		for rows.Next() {
			var l read.Like
			var st likeState
			if err := rows.Scan(&l.PostID, &l.User, &st.version, &st.liked); err != nil {
				rows.Close()
				return nil, fmt.Errorf("apply: scan like: %w", err)
			}
			b.likes[l] = &st
		}
		if err := closeRows(rows); err != nil {
			return nil, fmt.Errorf("apply: load likes: %w", err)
		}
	}
	return b, nil
}

// store writes what fold decided: post rows (whole, or only their like counters), like rows and
// comment changes.
func (m *Model) store(ctx context.Context, tx *sqlx.Tx, gen int64, b *batch) error {
	var postArgs, updateArgs, postLikeArgs [][]any
	// Key order, as for likes: each index page is touched once per batch.
	for _, id := range slices.Sorted(slices.Values(b.writeOrder)) {
		p := b.posts[id]
		var edited, message any
		if p.EditedAt != nil {
			edited = p.EditedAt.UTC()
		}
		if p.messageSet {
			message = p.Message
		}
		switch {
		case p.dirty && !p.loaded:
			postArgs = append(postArgs, []any{gen, p.ID, p.Author, p.Message, p.CreatedAt.UTC(), edited,
				p.Likes, p.LikeVersion, p.CommentCount, p.Version, p.Deleted})
		case p.dirty:
			updateArgs = append(updateArgs, []any{gen, p.ID, message, edited,
				p.Likes, p.LikeVersion, p.CommentCount, p.Version, p.Deleted})
		case p.likesDirty:
			postLikeArgs = append(postLikeArgs, []any{gen, p.ID, p.Likes, p.LikeVersion})
		}
	}
	if err := m.execRows(ctx, tx, m.d.UpsertPosts, PostCols, postArgs); err != nil {
		return fmt.Errorf("apply: upsert posts: %w", err)
	}
	if err := m.execRows(ctx, tx, m.d.UpdatePosts, PostUpdateCols, updateArgs); err != nil {
		return fmt.Errorf("apply: update posts: %w", err)
	}
	if err := m.execRows(ctx, tx, m.d.UpdatePostLikes, PostLikeCols, postLikeArgs); err != nil {
		return fmt.Errorf("apply: update like counts: %w", err)
	}
	if b.assumed != nil {
		if err := m.storeAssumedLikes(ctx, tx, gen, b); err != nil {
			return err
		}
	} else {
		likeArgs := make([][]any, 0, len(b.likeOrder))
		for _, l := range sortedLikes(b.likeOrder) {
			st := b.likes[l]
			likeArgs = append(likeArgs, []any{gen, l.PostID, l.User, st.version, st.liked})
		}
		if err := m.execRows(ctx, tx, m.d.UpsertLikes, LikeCols, likeArgs); err != nil {
			return fmt.Errorf("apply: upsert likes: %w", err)
		}
	}
	for _, op := range b.commentOps {
		var err error
		switch op.kind {
		case opAdd:
			_, err = m.exec(ctx, tx, m.d.InsertComment(), gen, op.c.PostID, op.c.ID, op.c.Author, op.c.Text, op.c.CreatedAt.UTC())
		case opEdit:
			_, err = m.exec(ctx, tx, m.d.UpdateComment(), op.c.Text, op.c.EditedAt.UTC(), gen, op.c.PostID, op.c.ID)
		case opRemove:
			_, err = m.exec(ctx, tx, m.d.DeleteComment(), gen, op.c.PostID, op.c.ID)
		}
		if err != nil {
			return fmt.Errorf("apply: comment %s: %w", op.c.ID, err)
		}
	}
	return nil
}

// storeAssumedLikes writes like rows under the states assumeLikes inferred: new rows by plain
// insert (a row that exists after all fails it), existing ones by an update conditional on their
// assumed version and state (a row that is elsewhere is not counted). Either way errAssumption.
func (m *Model) storeAssumedLikes(ctx context.Context, tx *sqlx.Tx, gen int64, b *batch) error {
	var inserts, updates [][]any
	for _, l := range sortedLikes(b.likeOrder) {
		st, prev := b.likes[l], b.assumed[l]
		if prev.version == 0 {
			inserts = append(inserts, []any{gen, l.PostID, l.User, st.version, st.liked})
		} else {
			updates = append(updates, []any{gen, l.PostID, l.User, st.version, st.liked, prev.version, prev.liked})
		}
	}
	if err := m.execRows(ctx, tx, m.d.InsertLikes, LikeCols, inserts); err != nil {
		return errAssumption // most likely a row that exists; the exact path will tell
	}
	n, err := m.execRowsCount(ctx, tx, m.d.UpdateLikes, LikeUpdateCols, updates)
	if err != nil {
		return fmt.Errorf("apply: update likes: %w", err)
	}
	if n != int64(len(updates)) {
		return errAssumption
	}
	return nil
}

// sortedLikes returns the likes in key order: rows written in index order touch each B-tree page
// once per batch instead of once per row.
func sortedLikes(ls []read.Like) []read.Like {
	out := slices.Clone(ls)
	slices.SortFunc(out, func(a, b read.Like) int {
		return cmp.Or(strings.Compare(a.PostID, b.PostID), strings.Compare(a.User, b.User))
	})
	return out
}

// lock takes the dialect's cross-process apply lock, if it has one.
func (m *Model) lock(ctx context.Context, tx *sqlx.Tx) error {
	if q := m.d.LockApply(); q != "" {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("lock: %w", err)
		}
	}
	return nil
}

// prepare prepares every statement of the apply path on the writer pool, once.
func (m *Model) prepare(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stmts != nil {
		return nil
	}
	var texts []string
	for _, n := range Shapes(m.d, 1, 1) {
		texts = append(texts, m.d.SelectPosts(n))
	}
	for _, n := range Shapes(m.d, LikeKeyCols, 1) {
		texts = append(texts, m.d.SelectLikes(n))
	}
	for _, n := range Shapes(m.d, PostCols, 0) {
		texts = append(texts, m.d.UpsertPosts(n))
	}
	for _, n := range Shapes(m.d, PostUpdateCols, 0) {
		texts = append(texts, m.d.UpdatePosts(n))
	}
	for _, n := range Shapes(m.d, PostLikeCols, 0) {
		texts = append(texts, m.d.UpdatePostLikes(n))
	}
	for _, n := range Shapes(m.d, LikeCols, 0) {
		texts = append(texts, m.d.UpsertLikes(n), m.d.InsertLikes(n))
	}
	for _, n := range Shapes(m.d, LikeUpdateCols, 0) {
		texts = append(texts, m.d.UpdateLikes(n))
	}
	texts = append(texts, m.d.ActiveGen(), m.d.InsertComment(), m.d.UpdateComment(), m.d.DeleteComment())
	stmts := make(map[string]*sqlx.Stmt, len(texts))
	for _, q := range texts {
		st, err := m.writer.PreparexContext(ctx, q)
		if err != nil {
			for _, st := range stmts {
				st.Close()
			}
			return fmt.Errorf("apply: prepare: %w", err)
		}
		stmts[q] = st
	}
	m.stmts = stmts
	return nil
}

// stmt returns the transaction's handle of a prepared statement, or nil if q was not prepared.
func (m *Model) stmt(ctx context.Context, tx *sqlx.Tx, q string) *sqlx.Stmt {
	m.mu.Lock()
	st := m.stmts[q]
	m.mu.Unlock()
	if st == nil {
		return nil
	}
	return tx.StmtxContext(ctx, st)
}

func (m *Model) exec(ctx context.Context, tx *sqlx.Tx, q string, args ...any) (sql.Result, error) {
	if st := m.stmt(ctx, tx, q); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return tx.ExecContext(ctx, q, args...)
}

func (m *Model) query(ctx context.Context, tx *sqlx.Tx, q string, args ...any) (*sqlx.Rows, error) {
	if st := m.stmt(ctx, tx, q); st != nil {
		return st.QueryxContext(ctx, args...)
	}
	return tx.QueryxContext(ctx, q, args...)
}

// execRows runs a multi-row statement over rows, cut into chunks of the prepared shapes.
func (m *Model) execRows(ctx context.Context, tx *sqlx.Tx, stmt func(n int) string, cols int, rows [][]any) error {
	_, err := m.execRowsCount(ctx, tx, stmt, cols, rows)
	return err
}

// execRowsCount is execRows that also returns the number of rows the statements affected.
func (m *Model) execRowsCount(ctx context.Context, tx *sqlx.Tx, stmt func(n int) string, cols int, rows [][]any) (int64, error) {
	var total int64
	for _, c := range cut(len(rows), Shapes(m.d, cols, 0)) {
		args := make([]any, 0, (c[1]-c[0])*cols)
		for _, r := range rows[c[0]:c[1]] {
			args = append(args, r...)
		}
		res, err := m.exec(ctx, tx, stmt(c[1]-c[0]), args...)
		if err != nil {
			return total, err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return total, err
		}
		total += n
	}
	return total, nil
}

// Post returns a live post. See read.Queries.
func (m *Model) Post(ctx context.Context, id string) (read.Post, bool, error) {
	row := m.reader.QueryRowxContext(ctx, m.d.Post(), id)
	p, err := scanPost(row)
	if errors.Is(err, sql.ErrNoRows) {
		return read.Post{}, false, nil
	}
	if err != nil {
		return read.Post{}, false, fmt.Errorf("post %s: %w", id, err)
	}
	return p, true, nil
}

// Posts returns one page of live posts. read.ErrBadCursor for a foreign cursor.
func (m *Model) Posts(ctx context.Context, f read.PostFilter) (read.PostPage, error) {
	f.First = ClampFirst(f.First)
	var after *Cursor
	if f.After != "" {
		var err error
		if after, err = DecodeCursor(f.After, f.Order); err != nil {
			return read.PostPage{}, err
		}
	}
	q, args := m.d.Posts(f, after)
	rows, err := m.reader.QueryxContext(ctx, q, args...)
	if err != nil {
		return read.PostPage{}, fmt.Errorf("posts: %w", err)
	}
	var page read.PostPage
	for rows.Next() {
		p, err := scanPost(rows)
		if err != nil {
			rows.Close()
			return read.PostPage{}, fmt.Errorf("posts: scan: %w", err)
		}
		page.Posts = append(page.Posts, p)
	}
	if err := closeRows(rows); err != nil {
		return read.PostPage{}, fmt.Errorf("posts: %w", err)
	}
	if len(page.Posts) > f.First {
		page.Posts, page.HasNext = page.Posts[:f.First], true
	}
	for _, p := range page.Posts {
		page.Cursors = append(page.Cursors, CursorOf(f.Order, p).Encode())
	}
	return page, nil
}

// CommentPages returns a page of the live comments of each live post, oldest first, in one query
// per call (per CommentPagesSize posts). read.ErrBadCursor for a foreign cursor. See read.Queries.
func (m *Model) CommentPages(ctx context.Context, postIDs []string, first int, after string) (map[string]read.CommentPage, error) {
	first = min(max(first, 1), read.MaxCommentPage)
	var pos *read.CommentPosition
	if after != "" {
		p, err := read.ParseCommentCursor(after)
		if err != nil {
			return nil, err
		}
		pos = &p
	}
	out := make(map[string]read.CommentPage, len(postIDs))
	ids := dedupe(postIDs)
	for _, c := range chunks(len(ids), CommentPagesSize(m.d)) {
		args := strArgs(ids[c[0]:c[1]])
		if pos != nil {
			args = append(args, pos.At.UTC(), pos.ID)
		}
		// One row more than a page tells whether a next page exists.
		args = append(args, first+1)
		rows, err := m.reader.QueryxContext(ctx, m.d.CommentPages(c[1]-c[0], pos != nil), args...)
		if err != nil {
			return nil, fmt.Errorf("comment pages: %w", err)
		}
		for rows.Next() {
			cm, err := scanComment(rows)
			if err != nil {
				rows.Close()
				return nil, fmt.Errorf("comment pages: scan: %w", err)
			}
			pg := out[cm.PostID]
			if len(pg.Comments) == first {
				pg.HasNext = true
			} else {
				pg.Comments = append(pg.Comments, cm)
				pg.Cursors = append(pg.Cursors, read.CommentCursor(cm))
			}
			out[cm.PostID] = pg
		}
		if err := closeRows(rows); err != nil {
			return nil, fmt.Errorf("comment pages: %w", err)
		}
	}
	return out, nil
}

// LikedBy reports which of postIDs user likes. See read.Queries.
func (m *Model) LikedBy(ctx context.Context, user string, postIDs []string) (map[string]bool, error) {
	out := make(map[string]bool, len(postIDs))
	ids := dedupe(postIDs)
	for _, c := range chunks(len(ids), InListSize(m.d)) {
		args := append([]any{user}, strArgs(ids[c[0]:c[1]])...)
		var liked []string
		if err := m.reader.SelectContext(ctx, &liked, m.d.LikedBy(c[1]-c[0]), args...); err != nil {
			return nil, fmt.Errorf("liked by %s: %w", user, err)
		}
		for _, id := range liked {
			out[id] = true
		}
	}
	return out, nil
}

// StreamVersion returns the applied version of stream, 0 if none. See read.Queries.
func (m *Model) StreamVersion(ctx context.Context, stream string) (int64, error) {
	var v int64
	var err error
	if postID, user, ok := parseLikeStream(stream); ok {
		err = m.reader.GetContext(ctx, &v, m.d.LikeVersion(), postID, user)
	} else if postID, ok := strings.CutPrefix(stream, "post/"); ok && write.PostStream(postID) == stream && !strings.Contains(postID, "/") {
		err = m.reader.GetContext(ctx, &v, m.d.StreamVersion(), postID)
	} else {
		return 0, nil // no stream of this name is ever applied
	}
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("stream version %s: %w", stream, err)
	}
	return v, nil
}

// parseLikeStream splits a write.LikeStream name into its post and user.
func parseLikeStream(stream string) (postID, user string, ok bool) {
	rest, ok := strings.CutPrefix(stream, "post/")
	if !ok {
		return "", "", false
	}
	postID, user, ok = strings.Cut(rest, "/likes/")
	return postID, user, ok && write.LikeStream(postID, user) == stream
}

// NewGeneration discards inactive generations and reserves a new one. See read.Generations.
func (m *Model) NewGeneration(ctx context.Context) (gen int64, err error) {
	tx, err := m.writer.BeginTxx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("new generation: begin: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback() // the cause is already in err
		}
	}()
	if err = m.lock(ctx, tx); err != nil {
		return 0, fmt.Errorf("new generation: %w", err)
	}
	for _, t := range Tables {
		if _, err = tx.ExecContext(ctx, m.d.DeleteInactive(t)); err != nil {
			return 0, fmt.Errorf("new generation: clear %s: %w", t, err)
		}
	}
	stmts := m.d.NextGen()
	for _, s := range stmts[:len(stmts)-1] {
		if _, err = tx.ExecContext(ctx, s); err != nil {
			return 0, fmt.Errorf("new generation: %w", err)
		}
	}
	if err = tx.GetContext(ctx, &gen, stmts[len(stmts)-1]); err != nil {
		return 0, fmt.Errorf("new generation: %w", err)
	}
	if err = tx.Commit(); err != nil {
		return 0, fmt.Errorf("new generation: commit: %w", err)
	}
	return gen, nil
}

// Activate switches queries and Apply to gen. See read.Generations.
func (m *Model) Activate(ctx context.Context, gen int64) (old int64, err error) {
	tx, err := m.writer.BeginTxx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("activate generation %d: begin: %w", gen, err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback() // the cause is already in err
		}
	}()
	if err = m.lock(ctx, tx); err != nil {
		return 0, fmt.Errorf("activate generation %d: %w", gen, err)
	}
	if err = tx.GetContext(ctx, &old, m.d.ActiveGen()); err != nil {
		return 0, fmt.Errorf("activate generation %d: %w", gen, err)
	}
	if _, err = tx.ExecContext(ctx, m.d.SetActive(), gen); err != nil {
		return 0, fmt.Errorf("activate generation %d: %w", gen, err)
	}
	if err = tx.Commit(); err != nil {
		return 0, fmt.Errorf("activate generation %d: commit: %w", gen, err)
	}
	return old, nil
}

// DropGeneration deletes an inactive generation's rows. See read.Generations.
func (m *Model) DropGeneration(ctx context.Context, gen int64) error {
	active, err := m.ActiveGeneration(ctx)
	if err != nil {
		return err
	}
	if gen == active {
		return fmt.Errorf("drop generation %d: it is the active one", gen)
	}
	// One statement per transaction, repeated while it deletes rows (dialects that delete in
	// chunks), keeps the write lock short while the live projector writes.
	for _, t := range Tables {
		for {
			res, err := m.writer.ExecContext(ctx, m.d.DeleteGen(t), gen)
			if err != nil {
				return fmt.Errorf("drop generation %d: %s: %w", gen, t, err)
			}
			if n, err := res.RowsAffected(); err != nil || n == 0 {
				break
			}
		}
	}
	return nil
}

// ActiveGeneration returns the active generation. See read.Generations.
func (m *Model) ActiveGeneration(ctx context.Context) (int64, error) {
	var gen int64
	if err := m.reader.GetContext(ctx, &gen, m.d.ActiveGen()); err != nil {
		return 0, fmt.Errorf("active generation: %w", err)
	}
	return gen, nil
}

// Dump lists the active generation in one read transaction. See read.Inspector.
func (m *Model) Dump(ctx context.Context) (read.State, error) {
	st := read.State{Streams: map[string]int64{}}
	tx, err := m.reader.BeginTxx(ctx, nil) // not ReadOnly: SQL Server's driver refuses that option
	if err != nil {
		return st, fmt.Errorf("dump: begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // read-only; nothing to undo
	rows, err := tx.QueryxContext(ctx, m.d.DumpPosts())
	if err != nil {
		return st, fmt.Errorf("dump posts: %w", err)
	}
	for rows.Next() {
		p, err := scanStored(rows)
		if err != nil {
			rows.Close()
			return st, fmt.Errorf("dump posts: %w", err)
		}
		st.Posts = append(st.Posts, p)
		st.Streams[write.PostStream(p.ID)] = p.Version
	}
	if err := closeRows(rows); err != nil {
		return st, fmt.Errorf("dump posts: %w", err)
	}
	if rows, err = tx.QueryxContext(ctx, m.d.DumpComments()); err != nil {
		return st, fmt.Errorf("dump comments: %w", err)
	}
	for rows.Next() {
		c, err := scanComment(rows)
		if err != nil {
			rows.Close()
			return st, fmt.Errorf("dump comments: %w", err)
		}
		st.Comments = append(st.Comments, c)
	}
	if err := closeRows(rows); err != nil {
		return st, fmt.Errorf("dump comments: %w", err)
	}
	if rows, err = tx.QueryxContext(ctx, m.d.DumpLikes()); err != nil {
		return st, fmt.Errorf("dump likes: %w", err)
	}
	for rows.Next() {
		var l read.Like
		var v int64
		var liked bool
		if err := rows.Scan(&l.PostID, &l.User, &v, &liked); err != nil {
			rows.Close()
			return st, fmt.Errorf("dump likes: %w", err)
		}
		st.Streams[write.LikeStream(l.PostID, l.User)] = v
		if liked {
			st.Likes = append(st.Likes, l)
		}
	}
	if err := closeRows(rows); err != nil {
		return st, fmt.Errorf("dump likes: %w", err)
	}
	sort.Slice(st.Comments, func(i, j int) bool {
		a, b := st.Comments[i], st.Comments[j]
		return a.PostID < b.PostID || a.PostID == b.PostID && a.ID < b.ID
	})
	return st, nil
}

type scanner interface{ Scan(dest ...any) error }

// scanPost reads the live-post columns: id, author, message, created_at, edited_at, likes,
// like_version, comment_count, version.
func scanPost(s scanner) (read.Post, error) {
	var p read.Post
	err := scanPostInto(s, &p)
	return p, err
}

// scanStored reads the post columns followed by deleted.
func scanStored(s scanner) (read.StoredPost, error) {
	var p read.StoredPost
	err := scanPostInto(s, &p.Post, &p.Deleted)
	return p, err
}

// scanPostInto scans the post columns, then extra ones, into p, with times in UTC.
func scanPostInto(s scanner, p *read.Post, extra ...any) error {
	var edited sql.NullTime
	dest := append([]any{&p.ID, &p.Author, &p.Message, &p.CreatedAt, &edited, &p.Likes, &p.LikeVersion, &p.CommentCount, &p.Version}, extra...)
	if err := s.Scan(dest...); err != nil {
		return err
	}
	p.CreatedAt = p.CreatedAt.UTC()
	if edited.Valid {
		t := edited.Time.UTC()
		p.EditedAt = &t
	}
	return nil
}

// scanComment reads id, post_id, author, text, created_at, edited_at.
func scanComment(s scanner) (read.Comment, error) {
	var c read.Comment
	var edited sql.NullTime
	if err := s.Scan(&c.ID, &c.PostID, &c.Author, &c.Text, &c.CreatedAt, &edited); err != nil {
		return c, err
	}
	c.CreatedAt = c.CreatedAt.UTC()
	if edited.Valid {
		t := edited.Time.UTC()
		c.EditedAt = &t
	}
	return c, nil
}

func closeRows(rows *sqlx.Rows) error {
	err := rows.Err()
	return errors.Join(err, rows.Close())
}

// cut splits n items into [from, to) ranges whose lengths are taken greedily from sizes (largest
// first, ending with 1).
func cut(n int, sizes []int) [][2]int {
	var out [][2]int
	for i := 0; i < n; {
		for _, size := range sizes {
			if n-i >= size || size == 1 {
				out = append(out, [2]int{i, i + size})
				i += size
				break
			}
		}
	}
	return out
}

// chunks cuts n items into [from, to) ranges of at most size items.
func chunks(n, size int) [][2]int {
	if size < 1 {
		size = 1
	}
	var out [][2]int
	for i := 0; i < n; i += size {
		out = append(out, [2]int{i, min(i+size, n)})
	}
	return out
}

func withGen(gen int64, ss []string) []any {
	return append([]any{gen}, strArgs(ss)...)
}

func strArgs(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

func dedupe(ss []string) []string {
	seen := make(map[string]bool, len(ss))
	out := make([]string, 0, len(ss))
	for _, s := range ss {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// utc returns a pointer to t in UTC.
func utc(t time.Time) *time.Time {
	t = t.UTC()
	return &t
}
