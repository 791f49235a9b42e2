-- 2 parameters
DELETE FROM dbo.posts WHERE gen = @p1 AND id = @p2;
