"""Where TLC trip files come from: TLC's public address by default, or a local mirror."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import dagster as dg
from pydantic import Field

from taxi_assets import settings, trip_files
from taxi_assets.core.tlc import TripDataError, is_remote, local_path
from taxi_assets.defs.resources import configured
from taxi_assets.trip_files import TripFile


class TripDataSource(dg.ConfigurableResource):
    """TLC green-taxi trip files and the zone lookup, from a URL template or a local directory.

    Files come through `taxi_assets.trip_files`, as taxi-replay's do: a download reaches `cache_dir` only once the
    caller has loaded it, a cached file the caller finds bad (`TripDataError`) is dropped, a truncated download is
    refused. Local files are read in place.
    """

    url_template: str = Field(
        default=settings.TLC_TRIP_DATA_URL,
        description="URL or path with `{month}` (YYYY-MM), or a directory holding green_tripdata_YYYY-MM.parquet",
    )
    zone_lookup_url: str = Field(default="", description="Zone lookup CSV; empty = next to local trip files, else TLC")
    cache_dir: str = Field(description="Where downloaded files are kept")

    @property
    def _template(self) -> str:
        return settings.resolve(self.url_template)

    @property
    def _cache(self) -> Path:
        return Path(settings.resolve(self.cache_dir))

    def trip_file(self, month: str, log: logging.Logger) -> AbstractContextManager[TripFile]:
        """The checked local file for `month`, with where it came from, for the body of the `with` to load; a
        download is cached only when that body succeeds."""
        return trip_files.month_file(self._template, month, self._cache, log)

    @contextmanager
    def zone_lookup(self, log: logging.Logger) -> Iterator[tuple[Path, str]]:
        """The zone lookup CSV and where it came from; a download is cached only when the body succeeds."""
        location = settings.resolve(self.zone_lookup_url) or self._default_zone_lookup()
        if not is_remote(location):
            path = local_path(location)
            if not path.is_file():
                raise TripDataError(f"zone lookup: no file at {path}")
            yield path, location
            return
        with trip_files.cached(location, "taxi_zone_lookup.csv", "zone lookup", self._cache, log) as path:
            yield path, location

    def _default_zone_lookup(self) -> str:
        if "{month}" not in self._template:
            return str(Path(self._template) / "taxi_zone_lookup.csv")
        if not is_remote(self._template):
            return str(local_path(self._template).parent / "taxi_zone_lookup.csv")
        return settings.TLC_ZONE_LOOKUP_URL


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(
        resources={
            "trip_data": TripDataSource(
                url_template=configured("trip_data_url"),
                zone_lookup_url=configured("zone_lookup_url"),
                cache_dir=configured("cache_dir"),
            )
        }
    )
