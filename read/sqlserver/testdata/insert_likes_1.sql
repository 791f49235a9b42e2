-- 3 parameters
MERGE dbo.likes WITH (HOLDLOCK) AS t USING (VALUES (@p1, @p2, @p3)) AS s (gen, post_id, user_id) ON t.gen = s.gen AND t.post_id = s.post_id AND t.user_id = s.user_id WHEN NOT MATCHED THEN INSERT (gen, post_id, user_id) VALUES (s.gen, s.post_id, s.user_id);
