-- 5 parameters
INSERT INTO dbo.likes (gen, post_id, user_id, version, liked) VALUES (@p1, @p2, @p3, @p4, @p5);
