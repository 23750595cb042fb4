"""fleet-attest on-device agent (never imports the verifier)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fleet-attest")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
