"""The MLOps Zoomcamp course's client (DataTalksClub/mlops-zoomcamp, 05-monitoring/send_data.py), as it is.

The course's script, per row of the raw 2022-01 green-taxi file read with pyarrow (`to_pylist()`): add a uuid4
`id`, write `id,duration` to target.csv unless the duration is zero, post the whole raw row as JSON with
datetimes as ISO strings (its `DateTimeEncoder`), read `response.json()['duration']` with no error handling,
print it and sleep a second. `send_row` and `main` below are that script; the only changes are parameters
(the file, the service's URL, the target file, the pause) where the course hard-codes them. `send_month` posts a
whole month row by row with the same encoding, 32 rows in flight (the course's one-second pause would make a month
take a day, and even without it one row at a time takes minutes), and collects every status instead of stopping at
the first error, so a test can count them.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from datetime import datetime
from pathlib import Path
from time import sleep

import aiohttp
import pyarrow.parquet as pq
import requests


class DateTimeEncoder(json.JSONEncoder):
    def default(self, o):
        if isinstance(o, datetime):
            return o.isoformat()
        return json.JSONEncoder.default(self, o)


def send_row(row: dict, url: str, f_target, session=requests) -> requests.Response:
    """The body of the course's loop, for one row (the row gains its `id`, as in the course)."""
    row["id"] = str(uuid.uuid4())
    duration = (row["lpep_dropoff_datetime"] - row["lpep_pickup_datetime"]).total_seconds() / 60
    if duration != 0.0:
        f_target.write(f"{row['id']},{duration}\n")
    return session.post(url, headers={"Content-Type": "application/json"}, data=json.dumps(row, cls=DateTimeEncoder))


def main(parquet: str, url: str, target: str = "target.csv", pause: float = 1.0) -> None:
    """The course's script: stops with an exception at the first answer without a `duration`."""
    table = pq.read_table(parquet)
    data = table.to_pylist()
    with open(target, "w") as f_target:
        for row in data:
            resp = send_row(row, url, f_target).json()
            print(f"prediction: {resp['duration']}")
            sleep(pause)


def send_month(parquet: Path, url: str, target: Path, concurrency: int = 32) -> list[tuple[str, int, dict | str]]:
    """Every row of `parquet` as the course sends it (its `id`, its target line, its JSON encoding and header),
    `concurrency` requests in flight on keep-alive connections (aiohttp: a thread per request would make the client,
    not the service, the bottleneck); per row, its id, the status and the answer (JSON, or the text)."""
    data = pq.read_table(parquet).to_pylist()

    async def send_all() -> list[tuple[str, int, dict | str]]:
        slots = asyncio.Semaphore(concurrency)
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def send(row: dict, f_target) -> tuple[str, int, dict | str]:
                # The course's row handling, as in send_row.
                row["id"] = str(uuid.uuid4())
                duration = (row["lpep_dropoff_datetime"] - row["lpep_pickup_datetime"]).total_seconds() / 60
                if duration != 0.0:
                    f_target.write(f"{row['id']},{duration}\n")
                body = json.dumps(row, cls=DateTimeEncoder)
                async with slots, session.post(url, headers={"Content-Type": "application/json"}, data=body) as resp:
                    text = await resp.text()
                try:
                    return row["id"], resp.status, json.loads(text)
                except ValueError:
                    return row["id"], resp.status, text

            with open(target, "w") as f_target:
                return await asyncio.gather(*(send(row, f_target) for row in data))

    return asyncio.run(send_all())


if __name__ == "__main__":  # python -m tests.support.course_client FILE URL [TARGET [PAUSE]]
    main(*sys.argv[1:4], *map(float, sys.argv[4:5]))
