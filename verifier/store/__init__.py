"""The store: one contract (``verifier.store.base.Store``), backends behind ``open_store``.

``open_store`` picks the backend from the target: a ``postgresql://`` (or ``postgres://``) URL
opens the shared PostgreSQL store (needs psycopg 3); anything else is a file path for the
embedded SQLite store. Either is created or migrated on first use; a store that cannot be used
raises ``StoreUnavailable``.
"""

from __future__ import annotations

from pathlib import Path

from verifier.errors import AmbiguousDevice, StoreUnavailable, UnknownDevice
from verifier.limits import DEFAULT_LIMITS, Limits
from verifier.store.base import Store

_POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def open_store(
    target: Path | str,
    limits: Limits = DEFAULT_LIMITS,
    *,
    read_only: bool = False,
    reserve_bytes: int | None = None,
) -> Store:
    """Open the store at ``target``; raises ``StoreUnavailable`` when it cannot be used.

    ``read_only``: for commands that only look. The database must exist at the current schema
    (nothing is created or migrated) and every write is refused by the database itself.
    ``reserve_bytes``: free space a SQLite store keeps on its file system (writes are refused
    below it; None: ``headroom.DEFAULT_RESERVE_BYTES``, 0: no check). PostgreSQL keeps its own.
    """
    if isinstance(target, Path) and str(target).startswith(("postgresql:", "postgres:")):
        raise StoreUnavailable(
            f"{target} looks like a PostgreSQL URL mangled into a file path; pass the URL as "
            "a string (a path collapses its '//')"
        )
    if isinstance(target, str) and target.startswith(_POSTGRES_SCHEMES):
        from verifier.store.postgres import PostgresStore  # noqa: PLC0415 (optional backend)

        return PostgresStore(target, limits, read_only=read_only)
    from verifier.store.sqlite import SqliteStore  # noqa: PLC0415 (keeps import light)

    if reserve_bytes is None:
        return SqliteStore(Path(target), limits, read_only=read_only)
    return SqliteStore(Path(target), limits, read_only=read_only, reserve_bytes=reserve_bytes)


MAX_CANDIDATES = 10  # an ambiguous prefix lists at most this many devices


def resolve_device(store: Store, text: str) -> str:
    """The device id ``text`` names: the id itself, or the one id that starts with it.

    Every command and RPC that takes a device goes through here, so a prefix means the same
    everywhere. None: ``UnknownDevice``; several: ``AmbiguousDevice`` listing candidates.
    """
    if not text:
        raise UnknownDevice("no device id given")
    if store.get_device(text) is not None:
        return text
    ids = store.device_ids_with_prefix(text, MAX_CANDIDATES + 1)
    if not ids:
        raise UnknownDevice(f"no enrolled device has an id starting with {text!r}")
    if len(ids) > 1:
        shown = ", ".join(ids[:MAX_CANDIDATES]) + (", ..." if len(ids) > MAX_CANDIDATES else "")
        raise AmbiguousDevice(f"{text!r} matches several devices: {shown}")
    return ids[0]


__all__ = ["Store", "StoreUnavailable", "open_store", "resolve_device"]
