-- 1 parameters
DELETE FROM dbo.comments WHERE gen = @p1;
