"""HEALTHCHECK of berth/synapse: GET the homeserver's /health, healthy on "OK".

The URL defaults to http://localhost:8008/health; set SYNAPSE_HEALTHCHECK_URL
when the client listener is elsewhere. Python's urllib instead of curl keeps
the image free of curl and its libraries.
"""

import os
import sys
import urllib.request

url = os.environ.get("SYNAPSE_HEALTHCHECK_URL") or "http://localhost:8008/health"
try:
    with urllib.request.urlopen(url, timeout=5) as response:
        body = response.read(64)
except Exception as e:  # noqa: BLE001 - any failure is "unhealthy"
    print(f"{url}: {e}", file=sys.stderr)
    sys.exit(1)
if body.strip() != b"OK":
    print(f"{url}: unexpected answer {body!r}", file=sys.stderr)
    sys.exit(1)
