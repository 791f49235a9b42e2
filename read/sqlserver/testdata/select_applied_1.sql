-- 2 parameters
SELECT stream, version FROM dbo.applied WHERE gen = @p1 AND stream IN (@p2);
