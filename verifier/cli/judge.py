"""What a command reading the store knows, to decide currency the one way (``verifier.currency``).

The store holds the revocations (operators' and the CRL findings verifiers recorded); the
golden set is a directory only the command line can name (``--golden DIR``). Without it the
command cannot know whether a release was revoked or retired, and every verdict is ``unknown``:
it says so and never prints "trusted". CRLs themselves are checked by the serving verifiers,
which record what they find in the store.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from verifier.cli.common import UsageError
from verifier.currency import Currency, Revocations, currency
from verifier.golden.load import GoldenError, load_golden_dir
from verifier.golden.model import GoldenSet
from verifier.records import DeviceRecord
from verifier.store.base import Store
from verifier.verdict import BootEpoch, Verdict

NO_GOLDEN_HINT = "pass --golden DIR (the directory the verifiers serve) to decide"
clock = time.time  # what "now" is for the commands (tests move it)


def add_golden_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--golden",
        type=Path,
        help="golden measurements directory; without it currency is unknown (fail closed)",
    )


class LocalJudge:
    def __init__(self, store: Store, golden_dir: Path | None, now: float | None = None) -> None:
        self.now = clock() if now is None else now
        self.golden = _load(golden_dir)
        self.revocations = Revocations.from_records(store.revocations())

    def currency(
        self, verdict: Verdict, device: DeviceRecord | None, latest_epoch: BootEpoch | None
    ) -> Currency:
        found = currency(
            verdict,
            self.now,
            golden=self.golden,
            revocations=self.revocations,
            latest_epoch=latest_epoch,
            profile=(device.profile or None) if device else None,
        )
        if self.golden is None:
            return Currency(found.state, f"{found.why}; {NO_GOLDEN_HINT}")
        return found


def _load(golden_dir: Path | None) -> GoldenSet | None:
    if golden_dir is None:
        return None
    try:
        return load_golden_dir(golden_dir)
    except GoldenError as exc:
        problems = "; ".join(str(p) for p in exc.problems[:5])
        raise UsageError(f"{golden_dir}: not a valid golden set: {problems}") from exc
