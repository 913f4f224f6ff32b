-- venzory_monitor: the least-privileged role venzory-db-exporter needs (docs/security.md).
--
-- What it may do: connect to the app's database, look up the schema, and read the app's
-- tables (today's and, through default privileges, those later migrations create).
-- Nothing else: no write, no CREATE, no pg_monitor / pg_read_all_stats (the lock watch
-- works without them, see docs/security.md), no pg_read_all_settings.
--
-- Run it as a superuser or as the owner of the app's tables, connected to the app's
-- database (not `postgres`):
--
--   psql "postgresql://admin@db:5432/venzory" -v ON_ERROR_STOP=1 \
--        -v monitor_password="$VENZORY_MONITOR_PASSWORD" \
--        -v app_owner=venzory_app \
--        -f deploy/sql/monitoring-role.sql
--
-- Variables (psql -v):
--   monitor_password  the role's password; leave it out for certificate or peer login
--   app_owner         the role that runs `prisma migrate deploy` and so owns the tables it
--                     creates (default: the role running this script)
--   schema            the app's schema (default: public, Prisma's default)
--
-- Idempotent: run it again at any time (it re-grants, and resets the password if given).
-- Then point DATABASE_URL at it: postgresql://venzory_monitor:...@db:5432/venzory
-- `venzory-db-exporter verify` prints "Privileges: ✔ role venzory_monitor can only read".

\set ON_ERROR_STOP on
\if :{?schema}
\else
  \set schema public
\endif
\if :{?app_owner}
\else
  \set app_owner :USER
\endif

SELECT 'CREATE ROLE venzory_monitor LOGIN'
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'venzory_monitor') \gexec

-- Only LOGIN: every other attribute off, whatever the role had before.
ALTER ROLE venzory_monitor LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
\if :{?monitor_password}
  ALTER ROLE venzory_monitor PASSWORD :'monitor_password';
\endif
-- Read-only transactions by default: the exporter sets it on every session too; this also
-- covers a person who logs in with the role to look around.
ALTER ROLE venzory_monitor SET default_transaction_read_only = on;

-- CONNECT is granted to PUBLIC by default; granted explicitly for databases that revoked it.
SELECT format('GRANT CONNECT ON DATABASE %I TO venzory_monitor', current_database()) \gexec
GRANT USAGE ON SCHEMA :"schema" TO venzory_monitor;
-- The app's tables, and Prisma's _prisma_migrations (migration state and drift).
GRANT SELECT ON ALL TABLES IN SCHEMA :"schema" TO venzory_monitor;
-- Tables that later migrations create (as app_owner) are readable too.
ALTER DEFAULT PRIVILEGES FOR ROLE :"app_owner" IN SCHEMA :"schema" GRANT SELECT ON TABLES TO venzory_monitor;
