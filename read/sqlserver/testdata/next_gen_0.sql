-- 0 parameters
UPDATE dbo.generation SET next_gen = next_gen + 1 OUTPUT deleted.next_gen WHERE id = 1;
