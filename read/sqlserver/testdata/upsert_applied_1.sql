-- 4 parameters
MERGE dbo.applied WITH (HOLDLOCK) AS t USING (VALUES (@p1, @p2, @p3, @p4)) AS s (gen, stream, post_id, version) ON t.gen = s.gen AND t.stream = s.stream WHEN MATCHED THEN UPDATE SET version = s.version WHEN NOT MATCHED THEN INSERT (gen, stream, post_id, version) VALUES (s.gen, s.stream, s.post_id, s.version);
