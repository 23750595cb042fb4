"""Limits on untrusted input, in one place.

Every size an agent or a file controls is checked against one of these before it is parsed
or stored. A value over its limit raises ``LimitExceeded`` with the limit in the message.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    max_message_bytes: int = 6 * 1024 * 1024  # one gRPC request (an event log at its limit fits)
    max_ek_certificate_bytes: int = 16 * 1024  # also each intermediate the agent sends
    max_ek_intermediates: int = 4
    max_reason_bytes: int = 1024  # an operator's reason for a revocation or a change
    max_tpm_public_bytes: int = 2 * 1024  # TPM2B_PUBLIC (RSA-4096 fits easily)
    max_quote_bytes: int = 2 * 1024  # TPMS_ATTEST of a quote
    max_signature_bytes: int = 1024  # TPMT_SIGNATURE
    max_labels: int = 16
    max_label_bytes: int = 256  # each key and each value
    max_device_id_bytes: int = 128
    max_event_log_bytes: int = 4 * 1024 * 1024
    max_events: int = 20_000
    max_event_data_bytes: int = 1024 * 1024  # one event's data
    max_digests_per_event: int = 8
    max_golden_file_bytes: int = 1024 * 1024
    max_stored_evidence_bytes: int = 4 * 1024 * 1024  # per device, for dry runs


DEFAULT_LIMITS = Limits()
