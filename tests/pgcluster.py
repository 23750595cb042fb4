"""A throwaway PostgreSQL server for the store tests (skipped where PostgreSQL is not installed).

``pg_cluster`` (session scope) runs ``initdb`` and ``pg_ctl start`` in a private temporary
directory, listening on a Unix socket only, with durability off (tests do not need it), and
stops it at the end. As root the server runs as the ``postgres`` user (initdb refuses root).
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


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[str]:
    """The base URL of a running throwaway server (database ``postgres``)."""
    _require_psycopg()
    initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        _unavailable("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    prefix = _as_server_user()
    root = Path(tempfile.mkdtemp(prefix="fleet-attest-pg-"))
    if prefix:
        shutil.chown(root, user="postgres")
    data = root / "data"
    options = (
        f"-k {root} -p {PORT} -c listen_addresses='' -c fsync=off"
        " -c synchronous_commit=off -c full_page_writes=off"
    )
    try:
        subprocess.run(
            [*prefix, initdb, "-D", str(data), "-A", "trust", "-U", "attest", "--no-sync"],
            check=True,
            capture_output=True,
            cwd=root,
        )
        subprocess.run(
            [*prefix, pg_ctl, "-D", str(data), "-l", str(root / "log"), "-w", "-o", options,
             "start"],
            check=True,
            capture_output=True,
            cwd=root,
        )  # fmt: skip
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(root, ignore_errors=True)
        _unavailable(f"could not start PostgreSQL: {exc.stderr!r}")
    try:
        yield f"postgresql://attest@/postgres?host={quote(str(root))}&port={PORT}"
    finally:
        subprocess.run(
            [*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "stop"],
            check=False,
            capture_output=True,
            cwd=root,
        )
        shutil.rmtree(root, ignore_errors=True)


def fresh_schema_url(base: str) -> str:
    """A URL whose ``search_path`` is a new, empty schema on the ``pg_cluster`` server."""
    import psycopg  # type: ignore[import-not-found, unused-ignore]  # noqa: PLC0415

    schema = "t_" + secrets.token_hex(6)
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    return f"{base}&options={quote(f'-c search_path={schema}')}"
