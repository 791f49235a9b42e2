-- 0 parameters
SELECT id, post_id, author, text, created_at, edited_at FROM dbo.comments WHERE gen = (SELECT active FROM dbo.generation WHERE id = 1) ORDER BY post_id, id;
