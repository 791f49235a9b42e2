-- 8 parameters
SELECT post_id, user_id FROM dbo.likes WHERE gen = @p1 AND post_id IN (@p2, @p3, @p4) AND user_id IN (@p5, @p6, @p7, @p8);
