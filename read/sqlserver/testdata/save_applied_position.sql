-- 2 parameters
UPDATE dbo.applied_position SET position = @p1 WHERE id = 1 AND position < @p2;
