"""Call an API with this workload's X.509-SVID and a token bound to it, with asyncio (docs/apps.md).

Environment: SPIFFE_ENDPOINT_SOCKET (the Workload API), SIDECAR_SOCKET, API_URL, AUDIENCE, and optionally SCOPE
and API_ID (the API's SPIFFE ID; without it any server of a trusted trust domain is accepted).
"""

import asyncio
import os
import sys

from broker.appclient import AppClient
from broker.identity.spiffeid import SpiffeId


async def main() -> int:
    api_id = os.environ.get("API_ID")
    async with AppClient(
        sidecar_socket=os.environ["SIDECAR_SOCKET"],
        server_id=SpiffeId.parse(api_id) if api_id else None,
    ) as client:
        response = await client.request(
            "GET", os.environ["API_URL"], audience=os.environ["AUDIENCE"], scope=os.environ.get("SCOPE")
        )
    print(response.status, response.body.decode())
    return 0 if response.status == 200 else 1


sys.exit(asyncio.run(main()))
