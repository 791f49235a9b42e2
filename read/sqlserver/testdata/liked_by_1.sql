-- 2 parameters
SELECT post_id FROM dbo.likes WHERE gen = (SELECT active FROM dbo.generation WHERE id = 1) AND liked = 1 AND user_id = @p1 AND post_id IN (@p2);
