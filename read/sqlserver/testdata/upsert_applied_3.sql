-- 12 parameters
MERGE dbo.applied WITH (HOLDLOCK) AS t USING (VALUES (@p1, @p2, @p3, @p4), (@p5, @p6, @p7, @p8), (@p9, @p10, @p11, @p12)) AS s (gen, stream, post_id, version) ON t.gen = s.gen AND t.stream = s.stream WHEN MATCHED THEN UPDATE SET version = s.version WHEN NOT MATCHED THEN INSERT (gen, stream, post_id, version) VALUES (s.gen, s.stream, s.post_id, s.version);
