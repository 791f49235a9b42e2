-- Comment pages walk each post's comments in time order (CommentPages): this index holds the
-- keyset and the primary key, so numbering a post's comments reads small entries, not their texts.

-- +goose Up
CREATE INDEX IF NOT EXISTS comments_by_time ON comments (gen, post_id, created_at, id);

-- +goose Down
DROP INDEX IF EXISTS comments_by_time;
