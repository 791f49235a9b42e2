-- 0 parameters
SELECT post_id, user_id, version, liked FROM dbo.likes WHERE gen = (SELECT active FROM dbo.generation WHERE id = 1) ORDER BY post_id, user_id;
