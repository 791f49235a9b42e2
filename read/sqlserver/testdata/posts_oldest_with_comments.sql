-- 1 parameters
SELECT TOP (@p1) id, author, message, created_at, edited_at, likes, like_version, comment_count, version FROM dbo.posts WHERE gen = (SELECT active FROM dbo.generation WHERE id = 1) AND deleted = 0 AND comment_count > 0 ORDER BY created_at, id;
