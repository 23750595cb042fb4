"""The verifier's exceptions: one shallow tree, named by what failed.

Every check raises one of these (checks never return booleans). The user-facing text is the
exception's message; ``verifier.service.errors`` maps each class to exactly one gRPC status
code, in one place. Policy evaluation does not raise: it collects ``Reason`` values so that a
verdict can say everything that is wrong at once.
"""

from __future__ import annotations


class AttestationError(Exception):
    """Base class of every error the verifier reports about evidence or a request."""


class MalformedEvidence(AttestationError):
    """Input that does not parse as the structure it claims to be."""


class LimitExceeded(MalformedEvidence):
    """Input larger than the configured limit for it (see ``verifier.limits``)."""


class EventLogError(MalformedEvidence):
    """The event log is not a valid TCG PC Client firmware log (the parser's one error)."""


class ImaLogError(MalformedEvidence):
    """The IMA measurement list does not parse, or an entry disagrees with its template hash."""


class ImaLogRequired(AttestationError):
    """The entries sent cannot be appraised without the whole IMA log (gap, overlap that
    disagrees, new boot, no stored state): the agent must send the log from entry 0."""


class SignatureInvalid(AttestationError):
    """A signature does not verify with the key it must come from."""


class NonceMismatch(AttestationError):
    """The quote is not bound to a nonce this verifier issued to this device, unused."""


class StaleEvidence(AttestationError):
    """A nonce, challenge or counter that is expired or went backwards."""


class ReplayMismatch(AttestationError):
    """Quoted PCRs and the values or event log sent with them disagree."""


class PolicyViolation(AttestationError):
    """The evidence is well formed but the policy forbids it (e.g. a SHA-1 bank)."""


class UnknownDevice(AttestationError):
    """No enrolled device with that id."""


class AmbiguousDevice(AttestationError):
    """A device-id prefix that matches more than one device (the candidates are listed)."""


class EnrollmentRefused(AttestationError):
    """Enrollment cannot proceed: untrusted endorsement or unacceptable key."""


class UntrustedEndorsement(EnrollmentRefused):
    """The EK certificate does not chain to a trusted root and the EK is not allowlisted."""


class UnacceptableKey(EnrollmentRefused):
    """A key (EK or AK) with attributes or algorithms the verifier does not accept."""


class ApprovalRequired(EnrollmentRefused):
    """A new AK for a known EK, or a new device under the ``approve`` policy: an operator
    must approve it first."""


class NotInInventory(EnrollmentRefused):
    """Under the ``inventory`` policy, an EK the operators did not list."""


class Revoked(EnrollmentRefused):
    """The device, its EK, its EK certificate or its AK was taken out of the fleet."""


class ActivationFailed(AttestationError):
    """The credential activation proof is wrong, expired or already used."""


class ClockInDoubt(AttestationError):
    """The verifier's wall clock stepped or lies behind recorded times: it vouches for nothing
    (no challenge, no verdict, no token) until the clock is trusted again."""


class StoreUnavailable(AttestationError):
    """The store cannot be reached or refused the transaction."""
