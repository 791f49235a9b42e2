-- The read model in T-SQL. Every table carries a generation (gen) so that a rebuild can fill a new
-- generation beside the live one and switch by updating one row. Each table and its indexes are
-- created in one block guarded by OBJECT_ID, since T-SQL has no CREATE TABLE guard of its own.
-- Keys use a binary collation so that ids, authors and users compare exactly as in SQLite (the
-- server default is case-insensitive). Key columns are NVARCHAR of bounded length: NVARCHAR(MAX)
-- cannot be an index key. NVARCHAR lengths count UTF-16 code units, so a column holding n characters
-- (write.MaxUserLen for users, write.MaxCommentLen for comments) is 2n long: a character outside the
-- Basic Multilingual Plane (an emoji) takes two units.

-- +goose Up
-- +goose StatementBegin
IF OBJECT_ID(N'dbo.generation', N'U') IS NULL
BEGIN
    CREATE TABLE dbo.generation (
        id     INT NOT NULL CONSTRAINT generation_pk PRIMARY KEY CONSTRAINT generation_one CHECK (id = 1),
        active BIGINT NOT NULL,
        next_gen BIGINT NOT NULL
    );
    INSERT INTO dbo.generation (id, active, next_gen) VALUES (1, 1, 2);
END;
-- +goose StatementEnd

-- +goose StatementBegin
IF OBJECT_ID(N'dbo.posts', N'U') IS NULL
BEGIN
    CREATE TABLE dbo.posts (
        gen           BIGINT NOT NULL,
        id            NVARCHAR(64) COLLATE Latin1_General_100_BIN2 NOT NULL,
        author        NVARCHAR(256) COLLATE Latin1_General_100_BIN2 NOT NULL,
        message       NVARCHAR(MAX) NOT NULL,
        created_at    DATETIME2(7) NOT NULL,
        edited_at     DATETIME2(7) NULL,
        likes         BIGINT NOT NULL CONSTRAINT posts_likes_default DEFAULT 0,
        like_version  BIGINT NOT NULL CONSTRAINT posts_like_version_default DEFAULT 0,
        comment_count BIGINT NOT NULL CONSTRAINT posts_comment_count_default DEFAULT 0,
        version       BIGINT NOT NULL,
        deleted       BIT NOT NULL CONSTRAINT posts_deleted_default DEFAULT 0,
        CONSTRAINT posts_pk PRIMARY KEY (gen, id)
    );
    -- NEWEST and OLDEST scan this index in either direction; the filtered ones serve the filters.
    CREATE INDEX posts_by_time ON dbo.posts (gen, created_at, id) WHERE deleted = 0;
    CREATE INDEX posts_by_author ON dbo.posts (gen, author, created_at, id) WHERE deleted = 0;
    CREATE INDEX posts_with_comments ON dbo.posts (gen, created_at, id) WHERE deleted = 0 AND comment_count > 0;
    CREATE INDEX posts_by_likes ON dbo.posts (gen, likes DESC, id) WHERE deleted = 0;
END;
-- +goose StatementEnd

-- +goose StatementBegin
IF OBJECT_ID(N'dbo.comments', N'U') IS NULL
BEGIN
    CREATE TABLE dbo.comments (
        gen        BIGINT NOT NULL,
        post_id    NVARCHAR(64) COLLATE Latin1_General_100_BIN2 NOT NULL,
        id         NVARCHAR(64) COLLATE Latin1_General_100_BIN2 NOT NULL,
        author     NVARCHAR(256) COLLATE Latin1_General_100_BIN2 NOT NULL,
        text       NVARCHAR(4000) NOT NULL, -- 2,000 characters may take 4,000 UTF-16 code units
        created_at DATETIME2(7) NOT NULL,
        edited_at  DATETIME2(7) NULL,
        CONSTRAINT comments_pk PRIMARY KEY (gen, post_id, id)
    );
END;
-- +goose StatementEnd

-- What was applied lives beside its effect, written in the same transaction (idempotency): a post
-- stream's version is posts.version, a like stream's is likes.version. So likes holds one row per
-- user and post, liked or not, and applying a like writes one row.
-- +goose StatementBegin
IF OBJECT_ID(N'dbo.likes', N'U') IS NULL
BEGIN
    CREATE TABLE dbo.likes (
        gen     BIGINT NOT NULL,
        post_id NVARCHAR(64) COLLATE Latin1_General_100_BIN2 NOT NULL,
        user_id NVARCHAR(256) COLLATE Latin1_General_100_BIN2 NOT NULL,
        version BIGINT NOT NULL,
        liked   BIT NOT NULL,
        CONSTRAINT likes_pk PRIMARY KEY (gen, post_id, user_id)
    );
END;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
IF OBJECT_ID(N'dbo.likes', N'U') IS NOT NULL DROP TABLE dbo.likes;
IF OBJECT_ID(N'dbo.comments', N'U') IS NOT NULL DROP TABLE dbo.comments;
IF OBJECT_ID(N'dbo.posts', N'U') IS NOT NULL DROP TABLE dbo.posts;
IF OBJECT_ID(N'dbo.generation', N'U') IS NOT NULL DROP TABLE dbo.generation;
-- +goose StatementEnd
