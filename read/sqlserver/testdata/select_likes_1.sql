-- 3 parameters
SELECT l.post_id, l.user_id, l.version, l.liked FROM dbo.likes AS l JOIN (VALUES (@p2, @p3)) AS k (post_id, user_id) ON l.post_id = k.post_id AND l.user_id = k.user_id WHERE l.gen = @p1;
