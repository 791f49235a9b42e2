-- Run by compose's mssql-init service (sqlcmd as sa) once SQL Server answers. It creates
-- postgate's database and a login that owns that database only (postgate migrates its own
-- tables, so it needs DDL there, but nothing on the server). Every statement is guarded, so the
-- script is safe to run on every `docker compose up`.
--
-- sqlcmd fills $(MSSQL_DATABASE) and $(MSSQL_POSTGATE_PASSWORD) from the environment of the
-- same names.
IF DB_ID(N'$(MSSQL_DATABASE)') IS NULL
    CREATE DATABASE [$(MSSQL_DATABASE)];
GO
IF SUSER_ID(N'postgate') IS NULL
    CREATE LOGIN [postgate] WITH PASSWORD = N'$(MSSQL_POSTGATE_PASSWORD)', CHECK_POLICY = ON;
ELSE
    ALTER LOGIN [postgate] WITH PASSWORD = N'$(MSSQL_POSTGATE_PASSWORD)';
GO
USE [$(MSSQL_DATABASE)];
GO
IF USER_ID(N'postgate') IS NULL
    CREATE USER [postgate] FOR LOGIN [postgate];
GO
ALTER ROLE db_owner ADD MEMBER [postgate];
GO
