-- 4 parameters
SELECT post_id, user_id FROM dbo.likes WHERE gen = @p1 AND post_id IN (@p2) AND user_id IN (@p3, @p4);
