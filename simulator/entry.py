"""The ``attest-sim`` program: says which extra to install when tpm2-pytss is missing."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence

MISSING = (
    "attest-sim: the simulator needs tpm2-pytss, which is not installed: "
    "pip install 'fleet-attest[sim]' (it builds against libtss2-dev)"
)


def main(argv: Sequence[str] | None = None) -> int:
    if importlib.util.find_spec("tpm2_pytss") is None:
        print(MISSING, file=sys.stderr)
        return 2
    from simulator.cli import main as sim_main  # noqa: PLC0415 (after the check above)

    return sim_main(argv)
