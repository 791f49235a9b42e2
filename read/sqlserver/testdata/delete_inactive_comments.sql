-- 0 parameters
DELETE FROM dbo.comments WHERE gen <> (SELECT active FROM dbo.generation WHERE id = 1);
