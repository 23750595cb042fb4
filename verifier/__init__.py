"""fleet-attest verifier."""

__version__ = "0.1.0"
