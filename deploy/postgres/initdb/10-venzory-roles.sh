#!/bin/sh
# Run once by the postgres image on an empty data directory (docker-compose.yml mounts
# this folder at /docker-entrypoint-initdb.d). Creates the exporter's roles:
#   venzory_monitor  read-only: SELECT on every table (pg_read_all_data, PostgreSQL 14+)
#                    and read-only transactions by default. DATABASE_URL uses it.
#   venzory_shadow   may create and drop its own scratch databases, for the replay of the
#                    migrations folder (drift). SHADOW_DATABASE_URL uses it.
# The application's own role and schema are not created here: apply the app's migrations
# with `prisma migrate deploy` (as POSTGRES_USER), or point DATABASE_URL at your database.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v monitor_password="$VENZORY_MONITOR_PASSWORD" -v shadow_password="$VENZORY_SHADOW_PASSWORD" <<'SQL'
CREATE ROLE venzory_monitor LOGIN PASSWORD :'monitor_password';
GRANT pg_read_all_data TO venzory_monitor;
ALTER ROLE venzory_monitor SET default_transaction_read_only = on;
CREATE ROLE venzory_shadow LOGIN CREATEDB PASSWORD :'shadow_password';
SQL
