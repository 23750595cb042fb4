"""The live CRL set: the trust directory's ``*.crl`` files, re-read when one changes.

Invariants:
- ``LiveCrls.start`` raises ``TrustConfigError`` when a CRL cannot be used (unparsable, an
  issuer the directory does not hold, a bad signature): the verifier does not start.
- A reload that finds a bad CRL keeps the last good set and records the problem (served by the
  operator status call, with the stale lists); a request sees either the old or the new set.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from verifier.enrollment.crl import CRL_SUFFIX, CrlSet
from verifier.enrollment.ekchain import TrustConfigError, TrustStore

log = logging.getLogger(__name__)


class LiveCrls:
    def __init__(self, directory: Path | None, trust: TrustStore, initial: CrlSet) -> None:
        self.directory = directory
        self.trust = trust
        self._current = initial
        self._problem = ""
        self._lock = threading.Lock()
        self._fingerprint = _fingerprint(directory)

    @classmethod
    def start(cls, directory: Path | None, trust: TrustStore) -> LiveCrls:
        crls = CrlSet.load(directory, trust) if directory else CrlSet.empty()
        if crls.by_issuer:
            log.info("%d EK CRLs loaded from %s", len(crls.by_issuer), directory)
        return cls(directory, trust, crls)

    def current(self) -> CrlSet:
        return self._current

    def problems(self, now: float) -> list[str]:
        found = self._current.problems(now)
        return [*found, self._problem] if self._problem else found

    def reload_if_changed(self) -> bool:
        """Re-read the CRLs when a ``*.crl`` file changed; True when a new set went live."""
        if self.directory is None:
            return False
        with self._lock:
            fingerprint = _fingerprint(self.directory)
            if fingerprint == self._fingerprint:
                return False
            self._fingerprint = fingerprint
            try:
                crls = CrlSet.load(self.directory, self.trust)
            except (TrustConfigError, OSError) as exc:
                self._problem = f"CRL reload refused, the previous CRLs stay live: {exc}"
                log.error("%s", self._problem)
                return False
            self._problem = ""
            self._current = crls
            log.info("EK CRLs reloaded: %d issuers", len(crls.by_issuer))
            return True


def _fingerprint(directory: Path | None) -> tuple[tuple[str, int, int], ...]:
    if directory is None:
        return ()
    try:
        entries = sorted(p for p in directory.iterdir() if p.suffix.lower() == CRL_SUFFIX)
        return tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in entries)
    except OSError:
        return ()
