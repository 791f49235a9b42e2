-- 0 parameters
DECLARE @lock INT; EXEC @lock = sp_getapplock @Resource = N'postgate.read.apply', @LockMode = N'Exclusive', @LockOwner = N'Transaction', @LockTimeout = 30000; IF @lock < 0 THROW 51000, N'postgate: read-model apply lock not granted', 1;
