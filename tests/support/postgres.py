"""A throwaway PostgreSQL cluster on a free loopback port, from the Debian server binaries (`postgresql` package,
installed by scripts/setup.sh): what compose's `postgres` service gives Dagster, without Docker.

PostgreSQL refuses to run as root, so under root (CI) the cluster runs as the `postgres` system user the Debian
package creates (else `nobody`) in a temporary folder that user owns; otherwise as the current user. Every
connection, the superuser's included, needs a password (scram-sha-256): the credentials compose passes to
Dagster are checked, not trusted.
"""

import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.platform import free_port


@dataclass(frozen=True)
class Database:
    host: str
    port: int
    name: str
    user: str
    password: str

    def environment(self) -> dict[str, str]:
        """The variables docker/dagster.yaml reads, as compose sets them."""
        return {
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_DB": self.name,
            "DAGSTER_PG_USERNAME": self.user,
            "DAGSTER_PG_PASSWORD": self.password,
        }


def server_binaries() -> Path:
    """The newest installed PostgreSQL server's bin folder."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    assert found, "PostgreSQL server binaries not found: run `make setup` (installs Debian's postgresql)"
    return Path(found[-1]).parent


def _cluster_user() -> str | None:
    """The user to run the cluster as: None (this user) unless root, then `postgres`, else `nobody`."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("running as root and neither a `postgres` nor a `nobody` user exists")


@contextmanager
def running_postgres(database: str, user: str, log_path: Path, durable: bool = False) -> Iterator[Database]:
    """A fresh cluster with database `database` owned by `user` (a random password); stopped and removed after.

    Not `durable` (tests): no fsync, as nothing outlives the test; benchmarks ask for PostgreSQL's defaults."""
    import psycopg2

    bin_dir = server_binaries()
    run_as = _cluster_user()
    folder = Path(tempfile.mkdtemp(prefix="taxi-pg-"))
    data = folder / "data"
    superuser_password, password = secrets.token_hex(12), secrets.token_hex(12)
    (folder / "pwfile").write_text(superuser_password + "\n")
    if run_as is not None:
        entry = pwd.getpwnam(run_as)
        for path in (folder, folder / "pwfile"):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    # A neutral working directory the cluster user may enter, and no inherited locale surprises.
    common = {"cwd": folder, "user": run_as, "env": {"PATH": os.environ.get("PATH", ""), "LC_ALL": "C.UTF-8"}}
    try:
        subprocess.run(
            [bin_dir / "initdb", "-D", data, "-U", "postgres", "--pwfile", folder / "pwfile"]
            + ["--auth=scram-sha-256", "--encoding=UTF8", "--no-sync"],
            check=True,
            capture_output=True,
            **common,
        )
        port = free_port()
        with open(log_path, "wb") as log:
            server = subprocess.Popen(
                [bin_dir / "postgres", "-D", data, "-p", str(port), "-c", "listen_addresses=127.0.0.1"]
                + ["-c", f"unix_socket_directories={folder}", "-c", "max_connections=200"]
                + ([] if durable else ["-c", "fsync=off"]),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **common,
            )
        try:
            conn = _connect(psycopg2, port, "postgres", "postgres", superuser_password, server, log_path)
            conn.autocommit = True
            with conn.cursor() as cursor:
                cursor.execute(f"CREATE ROLE {user} LOGIN PASSWORD %s", (password,))
                cursor.execute(f"CREATE DATABASE {database} OWNER {user}")
            conn.close()
            yield Database("127.0.0.1", port, database, user, password)
        finally:
            # SIGINT: PostgreSQL's fast shutdown (disconnect clients, stop).
            os.killpg(server.pid, signal.SIGINT)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _connect(psycopg2, port: int, database: str, user: str, password: str, server, log_path: Path):
    deadline = time.monotonic() + 60
    while True:
        try:
            return psycopg2.connect(host="127.0.0.1", port=port, dbname=database, user=user, password=password)
        except psycopg2.OperationalError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not start: {log_path.read_text()[-2000:]}") from None
            time.sleep(0.2)
