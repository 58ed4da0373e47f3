"""Where TLC trip files come from: TLC's public address by default, or a local mirror."""

from __future__ import annotations

import logging
import os
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
from pydantic import Field

from taxi_assets import settings
from taxi_assets.core.tlc import (
    FileSummary,
    TripDataError,
    is_remote,
    local_path,
    source_location,
    validate_trip_file,
)
from taxi_assets.defs.resources import configured

_CHUNK = 1 << 20
_PROGRESS_EVERY_SECONDS = 2.0


@dataclass(frozen=True)
class TripFile:
    path: Path
    source: str
    summary: FileSummary


class TripDataSource(dg.ConfigurableResource):
    """TLC green-taxi trip files and the zone lookup, from a URL template or a local directory.

    A download reaches `cache_dir` only once the caller has loaded it, and a cached file the caller finds bad
    (`TripDataError`) is dropped, so the cache never keeps a file that failed: once the source is fixed, the next
    run downloads it again. Local files are read in place.
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

    @contextmanager
    def trip_file(self, month: str, log: logging.Logger) -> Iterator[TripFile]:
        """The checked local file for `month`, with where it came from, for the body of the `with` to load; a
        download is cached only when that body succeeds."""
        location = source_location(self._template, month)
        if not is_remote(location):
            path = local_path(location)
            if not path.is_file():
                raise TripDataError(f"{month}: no file at {path}")
            yield TripFile(path, location, validate_trip_file(path, month, location))
            return
        with self._through_cache(location, Path(location).name, month, log) as path:
            yield TripFile(path, location, validate_trip_file(path, month, location))

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
        with self._through_cache(location, "taxi_zone_lookup.csv", "zone lookup", log) as path:
            yield path, location

    @contextmanager
    def _through_cache(self, url: str, name: str, what: str, log: logging.Logger) -> Iterator[Path]:
        """`url` as a local file: the cached copy, or a download kept in the cache only if the body succeeds."""
        cached = Path(settings.resolve(self.cache_dir)) / name
        if cached.is_file():
            log.info(f"{what}: using cached {cached}")
            try:
                yield cached
            except TripDataError:
                # The file's own fault (not, say, a locked warehouse): the next run fetches it again.
                cached.unlink(missing_ok=True)
                log.warning(f"{what}: dropped {cached} from the cache")
                raise
            return
        partial = self._download(url, what, log)
        try:
            yield partial
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        os.replace(partial, cached)

    def _default_zone_lookup(self) -> str:
        if "{month}" not in self._template:
            return str(Path(self._template) / "taxi_zone_lookup.csv")
        if not is_remote(self._template):
            return str(local_path(self._template).parent / "taxi_zone_lookup.csv")
        return settings.TLC_ZONE_LOOKUP_URL

    def _download(self, url: str, what: str, log: logging.Logger) -> Path:
        """Stream `url` into a temporary file in the cache folder, logging progress; the caller renames it into
        the cache or deletes it."""
        cache = Path(settings.resolve(self.cache_dir))
        cache.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(dir=cache, prefix=".partial-", suffix=".download")
        partial = Path(name)
        try:
            with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
                total = int(response.headers.get("Content-Length") or 0)
                done, last_report = 0, time.monotonic()
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    done += len(chunk)
                    if time.monotonic() - last_report >= _PROGRESS_EVERY_SECONDS:
                        share = f" ({done / total:.0%})" if total else ""
                        log.info(f"{what}: downloaded {done / 1e6:.1f} MB{share} from {url}")
                        last_report = time.monotonic()
                if total and done != total:
                    raise TripDataError(f"{what}: {url} ended after {done} of {total} bytes")
            log.info(f"{what}: downloaded {done / 1e6:.1f} MB from {url}")
            return partial
        except urllib.error.HTTPError as error:
            partial.unlink(missing_ok=True)
            raise TripDataError(f"{what}: {url} answered HTTP {error.code} {error.reason}") from error
        except (urllib.error.URLError, OSError) as error:
            partial.unlink(missing_ok=True)
            raise TripDataError(f"{what}: could not download {url} ({error})") from error
        except BaseException:
            partial.unlink(missing_ok=True)
            raise


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
