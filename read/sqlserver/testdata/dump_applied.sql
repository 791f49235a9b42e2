-- 0 parameters
SELECT stream, version FROM dbo.applied WHERE gen = (SELECT active FROM dbo.generation WHERE id = 1);
