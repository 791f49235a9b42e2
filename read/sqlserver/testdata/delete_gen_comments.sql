-- 1 parameters
DELETE TOP (5000) FROM dbo.comments WHERE gen = @p1;
