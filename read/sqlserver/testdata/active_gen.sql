-- 0 parameters
SELECT active FROM dbo.generation WHERE id = 1;
