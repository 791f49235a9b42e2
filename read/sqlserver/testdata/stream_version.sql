-- 1 parameters
SELECT version FROM dbo.applied WHERE gen = (SELECT active FROM dbo.generation WHERE id = 1) AND stream = @p1;
