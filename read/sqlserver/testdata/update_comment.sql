-- 5 parameters
UPDATE dbo.comments SET text = @p1, edited_at = CAST(@p2 AS DATETIME2(7)) WHERE gen = @p3 AND post_id = @p4 AND id = @p5;
