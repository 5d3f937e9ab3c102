"""Runs synapse_auto_compressor once over a homeserver's database.

Arguments: PostgreSQL's host, user and database, the number of state groups
per chunk, and the most chunks to compress in this run. The password is read
from /run/secrets/postgres-password (mounted read-only), never taken from the
arguments or the environment, which `docker inspect` shows.
"""

import sys

import synapse_auto_compressor

host, user, database = sys.argv[1:4]
chunk_size, number_of_chunks = (int(arg) for arg in sys.argv[4:6])
with open("/run/secrets/postgres-password", encoding="ascii") as secret:
    password = secret.read().strip()
# the agent's passwords are base64url: nothing in them needs escaping in a URL
db_url = f"postgresql://{user}:{password}@{host}/{database}"
# level sizes: the compressor's own default (synapse_auto_compressor -l)
synapse_auto_compressor.compress_state_events_table(
    db_url=db_url, chunk_size=chunk_size, default_levels="100,50,25", number_of_chunks=number_of_chunks
)
print("compress_state: done", flush=True)
