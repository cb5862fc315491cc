"""The ceiling of bench/revalidate.py: a bare aiohttp loop, no Celery, no database.

    python -m bench.ceiling http://127.0.0.1:8099/ keys.txt --concurrency 256

Makes the service's probe (POST v2/integrations/authenticate with a GenieKey
header) once for every key of the file (one a line), `--concurrency` at a time
on one session, and prints {"calls", "seconds", "per_s", "statuses"} as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from pathlib import Path

import aiohttp


async def probe_all(base_url: str, keys: list[str], concurrency: int) -> dict[str, object]:
    url = base_url + "v2/integrations/authenticate"
    statuses: Counter[int] = Counter()
    pending = iter(keys)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def caller() -> None:
            for key in pending:
                headers = {"Authorization": f"GenieKey {key}", "Accept": "application/json"}
                async with session.post(url, json={"type": "sentry"}, headers=headers) as answer:
                    await answer.read()
                    statuses[answer.status] += 1

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    return {
        "calls": len(keys),
        "seconds": round(seconds, 3),
        "per_s": round(len(keys) / seconds, 1),
        "concurrency": concurrency,
        "statuses": {str(k): v for k, v in statuses.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base_url")
    parser.add_argument("keys", type=Path)
    parser.add_argument("--concurrency", type=int, default=256)
    args = parser.parse_args()
    keys = args.keys.read_text().split()
    print(json.dumps(asyncio.run(probe_all(args.base_url, keys, args.concurrency))))


if __name__ == "__main__":
    main()
