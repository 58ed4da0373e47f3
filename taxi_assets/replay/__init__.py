"""The parts of `taxi-replay` (its command line is taxi_assets/cli/replay.py): `rides` (TLC rows on one timeline,
the drift scenario, the request bodies), `stats` (answers counted and summarised) and `engine` (the asyncio sender).

A client of the service as any other: neither Dagster nor BentoML is imported here.
"""
