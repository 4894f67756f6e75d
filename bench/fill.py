"""Pre-fill a stream in a process of its own: ``python -m bench.fill URL STREAM KIND N``.

The filling client's memory never counts against a measured process. KIND is ``drain``
(random chats), ``ordered`` (round-robin chats with a per-chat ``seq``), ``shuffled``, or
``broadcast`` (one message to each of ``--chats`` private chats, ``--per-group`` to each of
``--groups`` groups and ``--busy`` to one chat, with a per-chat ``seq``). ``--cluster``: URL
is a Redis Cluster node; ``--partitions N``: write the N partition streams of STREAM.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from typing import Any

from redis.asyncio import RedisCluster

from bench.common import DRAIN_CHATS, broadcast_events, connect, drain_events, ordered_events
from codex_bot.redis import StreamProducer

_CHUNK = 1000


async def fill(url: str, stream: str, kind: str, count: int, args: Any) -> dict[str, Any]:
    """Append ``count`` events to ``stream`` with ``StreamProducer.add_events`` in chunks."""
    chats = args.chats
    if kind == "drain":
        events = drain_events(count, chats)
    elif kind == "broadcast":
        events = broadcast_events(chats, args.groups, args.per_group, args.busy)
    else:
        events = ordered_events(count, chats, shuffled=kind == "shuffled")
    redis: Any = RedisCluster.from_url(url) if args.cluster else connect(url)
    producer = StreamProducer(redis, stream, partitions=args.partitions)
    started = time.perf_counter()
    ids: list[str] = []
    try:
        while chunk := list(itertools.islice(events, _CHUNK)):
            added = await producer.add_events(chunk)
            if not ids:
                ids.append(added[0])
            ids[1:] = [added[-1]]
    finally:
        await redis.aclose()
    return {
        "stream": stream,
        "events": count,
        "first_id": ids[0] if ids else None,
        "last_id": ids[-1] if ids else None,
        "seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("stream")
    parser.add_argument("kind", choices=["drain", "ordered", "shuffled", "broadcast"])
    parser.add_argument("events", type=int)
    parser.add_argument("--chats", type=int, default=DRAIN_CHATS)
    parser.add_argument("--groups", type=int, default=0, help="broadcast: groups")
    parser.add_argument("--per-group", type=int, default=0, help="broadcast: messages per group")
    parser.add_argument("--busy", type=int, default=0, help="broadcast: messages to one chat")
    parser.add_argument("--cluster", action="store_true", help="URL is a Redis Cluster node")
    parser.add_argument("--partitions", type=int, help="write this many partition streams")
    args = parser.parse_args()
    result = asyncio.run(fill(args.url, args.stream, args.kind, args.events, args))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
