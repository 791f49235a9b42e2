-- 15 parameters
INSERT INTO dbo.likes (gen, post_id, user_id, version, liked) VALUES (@p1, @p2, @p3, @p4, @p5), (@p6, @p7, @p8, @p9, @p10), (@p11, @p12, @p13, @p14, @p15);
