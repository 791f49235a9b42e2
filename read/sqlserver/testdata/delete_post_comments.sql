-- 2 parameters
DELETE FROM dbo.comments WHERE gen = @p1 AND post_id = @p2;
