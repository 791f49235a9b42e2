-- The read model. Every table carries a generation (gen) so that a rebuild can fill a new
-- generation beside the live one and switch by updating one row. IF NOT EXISTS keeps two
-- processes that migrate the same file at once from failing on each other.

-- +goose Up
CREATE TABLE IF NOT EXISTS generation (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    active INTEGER NOT NULL,
    next_gen INTEGER NOT NULL
);
INSERT OR IGNORE INTO generation (id, active, next_gen) VALUES (1, 1, 2);

CREATE TABLE IF NOT EXISTS posts (
    gen           INTEGER NOT NULL,
    id            TEXT NOT NULL,
    author        TEXT NOT NULL,
    message       TEXT NOT NULL,
    created_at    TIMESTAMP NOT NULL,
    edited_at     TIMESTAMP,
    likes         INTEGER NOT NULL DEFAULT 0,
    like_version  INTEGER NOT NULL DEFAULT 0,
    comment_count INTEGER NOT NULL DEFAULT 0,
    version       INTEGER NOT NULL,
    deleted       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (gen, id)
) WITHOUT ROWID;
-- NEWEST and OLDEST scan this index in either direction; the partial ones serve the filters.
CREATE INDEX IF NOT EXISTS posts_by_time ON posts (gen, created_at, id) WHERE deleted = 0;
CREATE INDEX IF NOT EXISTS posts_by_author ON posts (gen, author, created_at, id) WHERE deleted = 0;
CREATE INDEX IF NOT EXISTS posts_with_comments ON posts (gen, created_at, id) WHERE deleted = 0 AND comment_count > 0;
CREATE INDEX IF NOT EXISTS posts_by_likes ON posts (gen, likes DESC, id) WHERE deleted = 0;

CREATE TABLE IF NOT EXISTS comments (
    gen        INTEGER NOT NULL,
    post_id    TEXT NOT NULL,
    id         TEXT NOT NULL,
    author     TEXT NOT NULL,
    text       TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    edited_at  TIMESTAMP,
    PRIMARY KEY (gen, post_id, id)
) WITHOUT ROWID;

-- What was applied lives beside its effect, written in the same transaction (idempotency): a post
-- stream's version is posts.version, a like stream's is likes.version. So likes holds one row per
-- user and post, liked or not, and applying a like writes one row.
CREATE TABLE IF NOT EXISTS likes (
    gen     INTEGER NOT NULL,
    post_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    liked   INTEGER NOT NULL,
    PRIMARY KEY (gen, post_id, user_id)
) WITHOUT ROWID;

-- +goose Down
DROP TABLE IF EXISTS likes;
DROP TABLE IF EXISTS comments;
DROP TABLE IF EXISTS posts;
DROP TABLE IF EXISTS generation;
