-- 2 parameters
SELECT id, version, deleted, likes, like_version, comment_count FROM dbo.posts WHERE gen = @p1 AND id IN (@p2);
