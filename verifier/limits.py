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
    # a runtime section's digests file (sha256sum lines; 1M digests with paths is ~150 MiB)
    max_runtime_digests_file_bytes: int = 256 * 1024 * 1024
    max_ima_log_bytes: int = 32 * 1024 * 1024  # one IMA measurement list, binary or ASCII
    max_ima_entries: int = 200_000
    max_ima_template_data_bytes: int = 128 * 1024  # one entry's template data
    max_ima_path_bytes: int = 4096  # PATH_MAX
    max_ima_signature_bytes: int = 2048  # an ima-sig/modsig field (RSA-4096 v2 is 521)
    max_ima_buf_bytes: int = 64 * 1024  # an ima-buf field (a key, a command line)
    max_ima_policy_digests: int = 2_000_000  # digests in one runtime policy
    max_ima_digests_per_path: int = 64
    max_runtime_policy_bytes: int = 64 * 1024 * 1024  # an imported Keylime policy (JSON)
    max_ima_patterns: int = 10_000  # exclusion and signature selectors in one policy
    max_ima_pattern_bytes: int = 4096
    max_stored_evidence_bytes: int = 4 * 1024 * 1024  # per device, for dry runs
    # attestations of one boot read back to rebuild its IMA entries (golden explain, dry run)
    max_whatif_ima_attestations: int = 10_000
    # Unauthenticated calls that store something (StartEnrollment, GetChallenge):
    open_calls_per_peer_per_second: float = 20.0  # per IPv4 address / IPv6 /64
    open_calls_peer_burst: float = 100.0  # a site behind one NAT enrolling at once
    open_calls_per_device_per_second: float = 1.0
    open_calls_device_burst: float = 10.0  # an agent's retries after a failure
    rate_limit_max_keys: int = 10_000  # per table (peers, devices): ~1 MB at most
    max_streams_per_identity: int = 1  # verdict streams per caller (see StreamSlots)
    max_note_bytes: int = 16 * 1024  # a signed note (checkpoint): text and every signature line
    max_note_signatures: int = 32  # c2sp.org/signed-note: verifiers MUST accept at least 16
    max_checkpoint_extensions: int = 16  # extension lines after the root hash
    max_audit_entry_bytes: int = 64 * 1024  # one log entry's canonical JSON


DEFAULT_LIMITS = Limits()
