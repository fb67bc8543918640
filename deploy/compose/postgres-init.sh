#!/bin/sh
# Runs once, when the postgres service starts on an empty data volume (docker-entrypoint-initdb.d):
# creates the role the token service logs in as, without superuser, CREATEDB or CREATEROLE, and its
# database, owned by it (the broker's migrations create its tables at start). psql reads the password
# from the compose secret itself (\set with a backquoted cat), so it is never on a command line; the
# server keeps only its SCRAM-SHA-256 verifier.
set -eu

psql --set ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname postgres <<'SQL'
\set broker_password `cat /run/secrets/spiffe-broker-db-password`
CREATE ROLE spiffe_broker LOGIN PASSWORD :'broker_password';
CREATE DATABASE spiffe_broker OWNER spiffe_broker;
REVOKE ALL ON DATABASE spiffe_broker FROM PUBLIC;
SQL
