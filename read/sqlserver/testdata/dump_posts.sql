-- 0 parameters
SELECT id, author, message, created_at, edited_at, likes, like_version, comment_count, version, deleted FROM dbo.posts WHERE gen = (SELECT active FROM dbo.generation WHERE id = 1) ORDER BY id;
