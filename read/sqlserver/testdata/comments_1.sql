-- 1 parameters
SELECT c.id, c.post_id, c.author, c.text, c.created_at, c.edited_at FROM dbo.comments AS c JOIN dbo.posts AS p ON p.gen = c.gen AND p.id = c.post_id AND p.deleted = 0 WHERE c.gen = (SELECT active FROM dbo.generation WHERE id = 1) AND c.post_id IN (@p1) ORDER BY c.post_id, c.created_at, c.id;
