"""``python -m verifier.cli``: the same as ``attest-verifier``."""

from verifier.cli import main

raise SystemExit(main())
