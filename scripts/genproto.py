"""Regenerate the Python modules of the gRPC API from proto/fleetattest/v1/fleetattest.proto.

.venv/bin/python scripts/genproto.py            # rewrite the committed modules
.venv/bin/python scripts/genproto.py --out DIR  # write them under DIR (the staleness test)

The generated modules import each other as ``fleetattest.v1``: the installed import name
(``proto/fleetattest`` is installed as the package ``fleetattest``; see pyproject.toml).
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO = "fleetattest/v1/fleetattest.proto"  # under proto/, imported as fleetattest.v1


def generate(out: Path) -> None:
    include = str(resources.files("grpc_tools") / "_proto")
    args = [
        "protoc",
        f"-I{ROOT / 'proto'}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        f"--plugin=protoc-gen-mypy_grpc={Path(sys.executable).parent / 'protoc-gen-mypy_grpc'}",
        f"--mypy_grpc_out={out}",
        str(ROOT / "proto" / PROTO),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=ROOT / "proto", help="output root (default: proto/)"
    )
    ns = parser.parse_args()
    generate(ns.out)
    print(f"generated {PROTO} under {ns.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
