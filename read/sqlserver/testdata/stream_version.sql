-- 1 parameters
SELECT version FROM dbo.posts WHERE gen = (SELECT active FROM dbo.generation WHERE id = 1) AND id = @p1;
