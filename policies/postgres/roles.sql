-- Who may do what in PostgreSQL. Applied (idempotently) by devstack locally and
-- by the bootstrap Job in Kubernetes, as the superuser, with psql:
--   OPENBAO_ADMIN_PASSWORD=... psql -v ON_ERROR_STOP=1 \
--     -c '\getenv openbao_admin_password OPENBAO_ADMIN_PASSWORD' -f roles.sql
-- (the password in the environment, not in argv where `ps` shows it; devstack
-- sends `\set openbao_admin_password '...'` on psql's stdin instead).
--
--   app_owner      NOLOGIN. Owns the schema and every table. Schema changes run
--                  as this role (the backend's short-lived migrator user does
--                  `SET ROLE app_owner`), never as the runtime user.
--   app_runtime    NOLOGIN. DML only: SELECT/INSERT/UPDATE/DELETE on tables,
--                  USAGE/SELECT on sequences. OpenBao's runtime users are members.
--   app_reader     NOLOGIN. CONNECT to appdb and nothing else (no table: the
--                  users table holds password hashes): what every role may
--                  read, the catalog and statistics views. The example report
--                  job's short-lived users (deploy/examples/psql-report).
--   openbao_admin  LOGIN. Used only by OpenBao's database engine to create and
--                  drop the short-lived users; is given the three roles above
--                  to hand out and may terminate sessions of users it revokes.
--                  It needs CREATEROLE, and on PostgreSQL 15 (Debian 12's)
--                  CREATEROLE may grant ANY non-superuser role, the built-in
--                  pg_execute_server_program and pg_write_server_files too:
--                  whoever can change OpenBao's database roles (its root
--                  token; in Kubernetes the unseal keys' Secret) can reach a
--                  shell as PostgreSQL's OS user. PostgreSQL 16 limits it to
--                  roles granted WITH ADMIN OPTION, as below.

SELECT 'CREATE ROLE app_owner NOLOGIN'
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'app_owner') \gexec
SELECT 'CREATE ROLE app_runtime NOLOGIN'
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'app_runtime') \gexec
SELECT 'CREATE ROLE app_reader NOLOGIN'
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'app_reader') \gexec
SELECT 'CREATE ROLE openbao_admin'
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'openbao_admin') \gexec

ALTER ROLE openbao_admin WITH LOGIN CREATEROLE NOSUPERUSER PASSWORD :'openbao_admin_password';
GRANT app_runtime TO openbao_admin WITH ADMIN OPTION;
GRANT app_owner TO openbao_admin WITH ADMIN OPTION;
GRANT app_reader TO openbao_admin WITH ADMIN OPTION;
GRANT pg_signal_backend TO openbao_admin;

SELECT 'CREATE DATABASE appdb OWNER app_owner ENCODING ''UTF8'' TEMPLATE template0'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'appdb') \gexec

REVOKE ALL ON DATABASE appdb FROM PUBLIC;
GRANT CONNECT ON DATABASE appdb TO app_owner, app_runtime, app_reader, openbao_admin;

\connect appdb
ALTER SCHEMA public OWNER TO app_owner;
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO app_runtime;
-- Tables and sequences app_owner creates later are usable by the runtime role.
ALTER DEFAULT PRIVILEGES FOR ROLE app_owner IN SCHEMA public
  GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO app_runtime;
ALTER DEFAULT PRIVILEGES FOR ROLE app_owner IN SCHEMA public
  GRANT USAGE, SELECT ON SEQUENCES TO app_runtime;

-- And those that already exist (re-running this file after migrations).
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO app_runtime;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO app_runtime;
-- ... except the migration bookkeeping, which the runtime role may only read:
-- app-backend's migrations revoke the rest when they create the table
-- (app-backend/src/db/migrate.rs), and a re-run of this file must not give
-- it back.
SELECT 'REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON public.schema_migrations FROM app_runtime'
 WHERE to_regclass('public.schema_migrations') IS NOT NULL \gexec
