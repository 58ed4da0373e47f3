"""TLC files as local files: a mirror's read in place, a URL's downloaded once into a cache folder and checked.

The one way to get a month's file, shared by the `TripDataSource` resource (the Dagster side) and `taxi-replay` (a
plain client of the service): neither Dagster nor BentoML is imported here. A download reaches the cache only once
the caller has used it without error, and a cached file the caller finds bad (`TripDataError`) is dropped, so the
cache never keeps a file that failed: once the source is fixed, the next use downloads it again. A download that
ends before its announced length (a dropped connection, which urllib does not report) is refused.
"""

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

from taxi_assets.core.tlc import FileSummary, TripDataError, is_remote, local_path, source_location, validate_trip_file

_CHUNK = 1 << 20
_PROGRESS_EVERY_SECONDS = 2.0
# How long a download waits for the source's next bytes before it fails (urllib's socket timeout).
DOWNLOAD_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class TripFile:
    path: Path
    source: str
    summary: FileSummary


@contextmanager
def month_file(template: str, month: str, cache_dir: Path, log: logging.Logger) -> Iterator[TripFile]:
    """The checked local file of `month` from the source `template` (see `source_location`), with where it came
    from, for the body of the `with` to read; a download is cached only when that body succeeds."""
    location = source_location(template, month)
    if not is_remote(location):
        path = local_path(location)
        if not path.is_file():
            raise TripDataError(f"{month}: no file at {path}")
        yield TripFile(path, location, validate_trip_file(path, month, location))
        return
    with cached(location, Path(location).name, month, cache_dir, log) as path:
        yield TripFile(path, location, validate_trip_file(path, month, location))


@contextmanager
def cached(url: str, name: str, what: str, cache_dir: Path, log: logging.Logger) -> Iterator[Path]:
    """`url` as a local file: the copy `name` in `cache_dir`, or a download kept there only if the body succeeds."""
    cached_path = cache_dir / name
    if cached_path.is_file():
        log.info(f"{what}: using cached {cached_path}")
        try:
            yield cached_path
        except TripDataError:
            # The file's own fault (not, say, a locked warehouse): the next use fetches it again.
            cached_path.unlink(missing_ok=True)
            log.warning(f"{what}: dropped {cached_path} from the cache")
            raise
        return
    partial = download(url, what, cache_dir, log)
    try:
        yield partial
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, cached_path)


def download(url: str, what: str, cache_dir: Path, log: logging.Logger) -> Path:
    """Stream `url` into a temporary file in `cache_dir`, logging progress; the caller renames it into the cache
    or deletes it."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=cache_dir, prefix=".partial-", suffix=".download")
    partial = Path(name)
    try:
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_SECONDS) as response:
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
