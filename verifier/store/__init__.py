"""The store: one contract (``verifier.store.base.Store``), backends behind ``open_store``.

``open_store`` picks the backend from the target: a ``postgresql://`` (or ``postgres://``) URL
opens the shared PostgreSQL store (needs psycopg 3); anything else is a file path for the
embedded SQLite store. Either is created or migrated on first use; a store that cannot be used
raises ``StoreUnavailable``.
"""

from __future__ import annotations

from pathlib import Path

from verifier.errors import StoreUnavailable
from verifier.limits import DEFAULT_LIMITS, Limits
from verifier.store.base import Store

_POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def open_store(target: Path | str, limits: Limits = DEFAULT_LIMITS) -> Store:
    """Open the store at ``target``; raises ``StoreUnavailable`` when it cannot be used."""
    if isinstance(target, Path) and str(target).startswith(("postgresql:", "postgres:")):
        raise StoreUnavailable(
            f"{target} looks like a PostgreSQL URL mangled into a file path; pass the URL as "
            "a string (a path collapses its '//')"
        )
    if isinstance(target, str) and target.startswith(_POSTGRES_SCHEMES):
        from verifier.store.postgres import PostgresStore  # noqa: PLC0415 (optional backend)

        return PostgresStore(target, limits)
    from verifier.store.sqlite import SqliteStore  # noqa: PLC0415 (keeps import light)

    return SqliteStore(Path(target), limits)


__all__ = ["Store", "StoreUnavailable", "open_store"]
