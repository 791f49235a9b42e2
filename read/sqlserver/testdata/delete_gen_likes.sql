-- 1 parameters
DELETE FROM dbo.likes WHERE gen = @p1;
