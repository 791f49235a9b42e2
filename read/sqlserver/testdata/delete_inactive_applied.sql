-- 0 parameters
DELETE FROM dbo.applied WHERE gen <> (SELECT active FROM dbo.generation WHERE id = 1);
