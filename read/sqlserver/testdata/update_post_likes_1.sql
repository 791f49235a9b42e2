-- 4 parameters
UPDATE p SET likes = v.likes, like_version = v.like_version FROM dbo.posts AS p JOIN (VALUES (@p1, @p2, @p3, @p4)) AS v (gen, id, likes, like_version) ON p.gen = v.gen AND p.id = v.id;
