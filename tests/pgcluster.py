"""A throwaway PostgreSQL server for the store tests (skipped where PostgreSQL is not installed).

``pg_cluster`` (session scope) runs ``initdb`` and ``pg_ctl start`` in a private temporary
directory, listening on a Unix socket only, with durability off (tests do not need it), and
stops it at the end. As root the server runs as the ``postgres`` user (initdb refuses root).
``pg_server`` gives a test a private server it may stop, start and fail over (``PgServer``).
``pg_url`` gives each test a fresh schema through the URL's ``search_path`` option, so tests
never see each other's rows.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn
from urllib.parse import quote

import pytest

PORT = 5432  # names the socket file inside the private directory; no TCP port is opened


def _bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _unavailable(reason: str) -> NoReturn:
    """Skip on a developer's machine without PostgreSQL; fail in CI, which installs it."""
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL backend tests cannot run in CI: {reason}")
    pytest.skip(reason)


def _require_psycopg() -> None:
    if importlib.util.find_spec("psycopg") is None:
        _unavailable("psycopg is not installed")


def _as_server_user() -> list[str]:
    if os.geteuid() != 0:
        return []
    if shutil.which("runuser") is None:
        _unavailable("running as root without runuser: cannot start PostgreSQL")
    try:
        subprocess.run(["id", "postgres"], check=True, capture_output=True)
    except subprocess.CalledProcessError:
        _unavailable("running as root and there is no postgres user to run PostgreSQL as")
    return ["runuser", "-u", "postgres", "--"]


class PgServer:
    """A private PostgreSQL server in ``root``, on a Unix socket only.

    ``stop``/``start`` stop and start it under its clients (``fast``: sessions are ended
    cleanly; ``immediate``: as a crash would). ``failover`` is a replica taking over: the
    server stops as if it crashed and a second server, started from a copy of its data
    directory (a replica that had received every commit), comes up at the same socket path.
    ``durable`` keeps ``synchronous_commit`` on, so that nothing a client got a commit for is
    lost when the server is killed (fsync stays off: the machine itself does not crash).
    """

    def __init__(self, root: Path, *, durable: bool = False) -> None:
        self.root = root
        self.prefix = _as_server_user()
        initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
        if initdb is None or pg_ctl is None:
            _unavailable("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
        self.pg_ctl = pg_ctl
        if self.prefix:
            shutil.chown(root, user="postgres")
        self.data = root / "data"
        self.options = (
            f"-k {root} -p {PORT} -c listen_addresses='' -c fsync=off"
            f" -c synchronous_commit={'on' if durable else 'off'} -c full_page_writes=off"
        )
        self._run(initdb, "-D", str(self.data), "-A", "trust", "-U", "attest", "--no-sync")
        self.url = f"postgresql://attest@/postgres?host={quote(str(root))}&port={PORT}"

    def _run(self, *argv: str) -> None:
        subprocess.run([*self.prefix, *argv], check=True, capture_output=True, cwd=self.root)

    def start(self) -> None:
        log = str(self.root / "log")
        self._run(self.pg_ctl, "-D", str(self.data), "-l", log, "-w", "-o", self.options, "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "stop")

    def failover(self) -> None:
        self.stop("immediate")
        replica = self.root / f"replica-{secrets.token_hex(3)}"
        self._run("cp", "-a", str(self.data), str(replica))
        self.data = replica
        self.start()

    def close(self) -> None:
        subprocess.run(
            [*self.prefix, self.pg_ctl, "-D", str(self.data), "-m", "immediate", "stop"],
            check=False,
            capture_output=True,
            cwd=self.root,
        )
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def pg_server(*, durable: bool = False) -> Iterator[PgServer]:
    """A running private server, removed at the end (skips where PostgreSQL is missing)."""
    _require_psycopg()
    root = Path(tempfile.mkdtemp(prefix="fleet-attest-pg-"))
    try:
        server = PgServer(root, durable=durable)
        server.start()
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(root, ignore_errors=True)
        _unavailable(f"could not start PostgreSQL: {exc.stderr!r}")
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[str]:
    """The base URL of a running throwaway server (database ``postgres``)."""
    with pg_server() as server:
        yield server.url


def fresh_schema_url(base: str) -> str:
    """A URL whose ``search_path`` is a new, empty schema on the ``pg_cluster`` server."""
    import psycopg  # type: ignore[import-not-found, unused-ignore]  # noqa: PLC0415

    schema = "t_" + secrets.token_hex(6)
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    return f"{base}&options={quote(f'-c search_path={schema}')}"
