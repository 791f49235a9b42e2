-- 1 parameters
UPDATE dbo.generation SET active = @p1 WHERE id = 1;
