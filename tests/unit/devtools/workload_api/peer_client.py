"""Child process for test_peer_credentials: call FetchX509SVID as root, then again after dropping to uid/gid.

Run as root: ``python peer_client.py SOCKET UID GID``; prints one JSON object. Every module is imported and every
code path (including the error path) exercised while still root, because after the drop the interpreter can no
longer read its own installation (/root is 0700).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

from grpclib.client import Channel
from grpclib.const import Cardinality
from grpclib.exceptions import GRPCError
from spiffe._proto import workload_pb2 as pb


async def fetch(path: str, *, header: bool = True) -> list[str] | str:
    channel = Channel(path=path)
    metadata = {"workload.spiffe.io": "true"} if header else None
    try:
        async with channel.request(
            "/SpiffeWorkloadAPI/FetchX509SVID", Cardinality.UNARY_STREAM, pb.X509SVIDRequest, pb.X509SVIDResponse,
            metadata=metadata,
        ) as stream:  # fmt: skip
            await stream.send_message(pb.X509SVIDRequest(), end=True)
            reply = await stream.recv_message()
            await stream.cancel()
            return [svid.spiffe_id for svid in reply.svids] if reply is not None else "EMPTY"
    except GRPCError as exc:
        return exc.status.name
    finally:
        channel.close()


def main() -> None:
    path, uid, gid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    result: dict[str, object] = {
        "no_header": asyncio.run(fetch(path, header=False)),
        "as_root": asyncio.run(fetch(path)),
    }
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    result["dropped"] = asyncio.run(fetch(path))
    result["ids"] = [os.getuid(), os.geteuid(), os.getgid(), os.getegid()]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
