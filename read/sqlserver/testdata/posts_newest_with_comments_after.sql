-- 3 parameters
SELECT TOP (@p1) id, author, message, created_at, edited_at, likes, like_version, comment_count, version FROM dbo.posts WHERE gen = (SELECT active FROM dbo.generation WHERE id = 1) AND deleted = 0 AND comment_count > 0 AND (created_at < CAST(@p2 AS DATETIME2(7)) OR (created_at = CAST(@p2 AS DATETIME2(7)) AND id < @p3)) ORDER BY created_at DESC, id DESC;
