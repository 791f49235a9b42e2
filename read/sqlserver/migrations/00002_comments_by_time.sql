-- Comment pages walk each post's comments in time order (CommentPages): this index holds the
-- keyset and the clustered key, so numbering a post's comments reads small entries, not their texts.
-- T-SQL has no CREATE INDEX guard of its own, so sys.indexes is asked first.

-- +goose Up
-- +goose StatementBegin
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'comments_by_time' AND object_id = OBJECT_ID(N'dbo.comments'))
    CREATE INDEX comments_by_time ON dbo.comments (gen, post_id, created_at, id);
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
IF EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'comments_by_time' AND object_id = OBJECT_ID(N'dbo.comments'))
    DROP INDEX comments_by_time ON dbo.comments;
-- +goose StatementEnd
