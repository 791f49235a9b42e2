-- 0 parameters
SELECT position FROM dbo.applied_position WHERE id = 1;
