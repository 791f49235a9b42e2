-- 1 parameters
DELETE TOP (5000) FROM dbo.likes WHERE gen = @p1;
