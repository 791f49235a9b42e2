-- 7 parameters
UPDATE l SET version = v.version, liked = v.liked FROM dbo.likes AS l JOIN (VALUES (@p1, @p2, @p3, @p4, @p5, @p6, @p7)) AS v (gen, post_id, user_id, version, liked, prev_version, prev_liked) ON l.gen = v.gen AND l.post_id = v.post_id AND l.user_id = v.user_id AND l.version = v.prev_version AND l.liked = v.prev_liked;
