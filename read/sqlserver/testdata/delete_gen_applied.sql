-- 1 parameters
DELETE FROM dbo.applied WHERE gen = @p1;
