#!/usr/bin/env bash
# First start of the postgres container only (docker-entrypoint-initdb.d): create the two
# roles Tapline uses.
#   tapline_owner  owns the database and every table; `api migrate` connects as it
#   tapline_app    what the api and workers connect as: not an owner, no BYPASSRLS, so
#                  row-level security applies; it gets DML on what the owner creates.
set -euo pipefail
: "${TAPLINE_OWNER_PASSWORD:?set it in datastores.env}"
: "${TAPLINE_APP_PASSWORD:?set it in datastores.env}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v owner_pw="$TAPLINE_OWNER_PASSWORD" -v app_pw="$TAPLINE_APP_PASSWORD" -v db="$POSTGRES_DB" <<'SQL'
CREATE ROLE tapline_owner LOGIN PASSWORD :'owner_pw';
CREATE ROLE tapline_app LOGIN PASSWORD :'app_pw' NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
ALTER DATABASE :"db" OWNER TO tapline_owner;
ALTER SCHEMA public OWNER TO tapline_owner;
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO tapline_app;
GRANT CONNECT ON DATABASE :"db" TO tapline_app;
ALTER DEFAULT PRIVILEGES FOR ROLE tapline_owner IN SCHEMA public
  GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO tapline_app;
ALTER DEFAULT PRIVILEGES FOR ROLE tapline_owner IN SCHEMA public
  GRANT USAGE, SELECT ON SEQUENCES TO tapline_app;
ALTER DEFAULT PRIVILEGES FOR ROLE tapline_owner IN SCHEMA public
  GRANT EXECUTE ON FUNCTIONS TO tapline_app;
SQL
