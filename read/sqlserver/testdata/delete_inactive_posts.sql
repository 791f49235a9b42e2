-- 0 parameters
DELETE FROM dbo.posts WHERE gen <> (SELECT active FROM dbo.generation WHERE id = 1);
