-- 2 parameters
SELECT id, post_id, author, text, created_at, edited_at FROM dbo.comments WHERE gen = @p1 AND post_id = @p2 ORDER BY id;
