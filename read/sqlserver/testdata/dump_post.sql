-- 2 parameters
SELECT id, author, message, created_at, edited_at, likes, like_version, comment_count, version, deleted FROM dbo.posts WHERE gen = @p1 AND id = @p2;
