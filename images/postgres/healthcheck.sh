#!/bin/sh
# HEALTHCHECK of berth/postgres: is the server accepting connections on its
# socket? pg_isready only pings (no password needed, and a ping that ends at
# the password prompt is not logged as a failed login). The temporary server
# of the first start listens on a private socket, so this stays red until
# initialisation is done.
exec pg_isready --quiet --host=/run/postgresql --port="${PGPORT:-5432}" \
  --username="${POSTGRES_USER:-postgres}" --dbname=postgres --timeout=5
