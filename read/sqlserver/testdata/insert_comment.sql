-- 6 parameters
INSERT INTO dbo.comments (gen, post_id, id, author, text, created_at) SELECT @p1, @p2, @p3, @p4, @p5, CAST(@p6 AS DATETIME2(7)) WHERE NOT EXISTS (SELECT 1 FROM dbo.comments WITH (UPDLOCK, HOLDLOCK) WHERE gen = @p1 AND post_id = @p2 AND id = @p3);
