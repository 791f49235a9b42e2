-- 2 parameters
DELETE FROM dbo.likes WHERE gen = @p1 AND post_id = @p2;
