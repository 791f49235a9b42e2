-- 0 parameters
EXEC sp_getapplock @Resource = N'postgate.read.apply', @LockMode = N'Exclusive', @LockOwner = N'Transaction', @LockTimeout = 30000;
