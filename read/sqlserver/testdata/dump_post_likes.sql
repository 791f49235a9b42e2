-- 2 parameters
SELECT post_id, user_id, version, liked FROM dbo.likes WHERE gen = @p1 AND post_id = @p2 ORDER BY user_id;
