"""The ``attest-agent`` program: says which extra to install when tpm2-pytss is missing."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence

MISSING = (
    "attest-agent: the agent needs tpm2-pytss, which is not installed: "
    "pip install 'fleet-attest[agent]' (it builds against libtss2-dev)"
)


def main(argv: Sequence[str] | None = None) -> int:
    if importlib.util.find_spec("tpm2_pytss") is None:
        print(MISSING, file=sys.stderr)
        return 2
    from agent.cli import main as agent_main  # noqa: PLC0415 (after the check above)

    return agent_main(argv)
