-- The application role cannot read schema_migrations. A process starting as it checks that the
-- database has every migration its binary knows (db.CheckSchema), so a release started before
-- `api migrate` ran stops with that message instead of failing later on a missing column;
-- this is its one way to read the applied versions, and it returns nothing else. A database
-- without this function predates it, and so lacks a migration any binary that checks needs.
create function tapline_schema_versions() returns setof int
    language sql stable security definer set search_path from current
    as $$ select version from schema_migrations order by version $$;
revoke execute on function tapline_schema_versions() from public;
grant execute on function tapline_schema_versions() to tapline_app;
