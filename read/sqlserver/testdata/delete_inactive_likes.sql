-- 0 parameters
DELETE FROM dbo.likes WHERE gen <> (SELECT active FROM dbo.generation WHERE id = 1);
