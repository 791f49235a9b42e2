-- 1 parameters
DELETE TOP (5000) FROM dbo.posts WHERE gen = @p1;
