-- 1 parameters
DELETE FROM dbo.posts WHERE gen = @p1;
