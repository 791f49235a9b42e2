-- 2 parameters
SELECT version FROM dbo.likes WHERE gen = (SELECT active FROM dbo.generation WHERE id = 1) AND post_id = @p1 AND user_id = @p2;
