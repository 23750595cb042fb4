"""The agent's two flows: enroll once per TPM, attest on every boot and before expiry.

The agent never imports the verifier: it speaks the v1 gRPC API and holds only what its
TPM produced. Its state directory keeps the AK blobs and the enrollment record, so a restart
or a reboot neither creates a new AK nor enrolls again.

The wire: TLS to the verifier's agent port, the verifier authenticated against the CA bundle
the agent pins (``AgentConfig.ca``, never the system store), no client certificate (the TPM
proves who the device is: credential activation at enrollment, the AK's signature on every
quote). Plaintext only when ``AgentConfig.insecure`` says so explicitly (labs). A verifier
whose certificate does not chain to the pinned CA, or one that does not speak TLS, is refused
at once (``VerifierNotAuthenticated``), never retried.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc

from agent import ima
from agent.backoff import Backoff, retry
from agent.state import AgentState
from agent.tpm import Tpm
from fleetattest.v1 import fleetattest_pb2 as pb
from fleetattest.v1 import fleetattest_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

DEFAULT_EVENT_LOG = Path("/sys/kernel/security/tpm0/binary_bios_measurements")
MAX_EVENT_LOG = 4 * 1024 * 1024
T = TypeVar("T")


@dataclass(frozen=True)
class AgentConfig:
    verifier: str
    tcti: str
    state_dir: Path
    ak_alg: str = "ecc"
    ek_alg: str = "auto"  # "auto": the EK whose certificate is in NV, RSA first
    event_log: Path | None = DEFAULT_EVENT_LOG
    labels: Mapping[str, str] | None = None
    timeout: float = 30.0
    new_ak: bool = False  # forget the saved AK and enroll a new one (after a TPM clear)
    ca: Path | None = None  # the verifier's CA bundle (PEM): pinned
    insecure: bool = False  # plaintext to the verifier: only when said explicitly
    ek_intermediates: tuple[bytes, ...] = ()  # DER CA certificates above the EK certificate
    ima_log: Path | None = None  # the IMA measurement list; None: send none
    boot_id: Path = ima.DEFAULT_BOOT_ID  # changes every boot: the IMA cursor is per boot


class ChannelConfigError(Exception):
    """Neither a CA to pin nor an explicit ``--insecure``: the agent will not guess."""


class VerifierNotAuthenticated(Exception):
    """The verifier could not be authenticated (one line, for the operator)."""


_OPTIONS = [("grpc.max_send_message_length", 8 * 1024 * 1024)]


def channel(address: str, ca: Path | None, *, insecure: bool = False) -> grpc.Channel:
    """A channel to the verifier's agent port: TLS pinned to ``ca``, or plaintext when
    ``insecure`` (and then only). Both or neither is a ``ChannelConfigError``."""
    if ca is not None and insecure:
        raise ChannelConfigError("--ca and --insecure are mutually exclusive")
    if insecure:
        return grpc.insecure_channel(address, options=_OPTIONS)
    if ca is None:
        raise ChannelConfigError(
            f"refusing to talk to {address} unauthenticated: give --ca FILE (the verifier's CA "
            "bundle), or --insecure for a plaintext lab verifier"
        )
    try:
        roots = ca.read_bytes()
    except OSError as exc:
        raise ChannelConfigError(f"cannot read --ca {ca}: {exc.strerror}") from exc
    if b"-----BEGIN CERTIFICATE-----" not in roots:
        raise ChannelConfigError(f"--ca {ca} holds no PEM certificate")
    creds = grpc.ssl_channel_credentials(root_certificates=roots)
    return grpc.secure_channel(address, creds, options=_OPTIONS)


def config_channel(config: AgentConfig) -> grpc.Channel:
    return channel(config.verifier, config.ca, insecure=config.insecure)


def authentication_failure(exc: BaseException, address: str) -> VerifierNotAuthenticated | None:
    """The one-line refusal for a failed TLS handshake with the verifier, or None when ``exc``
    is something else (an unreachable or busy verifier: transient)."""
    if not isinstance(exc, grpc.RpcError) or not isinstance(exc, grpc.Call):
        return None
    if exc.code() != grpc.StatusCode.UNAVAILABLE:
        return None
    details = str(exc.details())
    if "CERTIFICATE_VERIFY_FAILED" in details:
        return VerifierNotAuthenticated(
            f"cannot authenticate the verifier at {address}: its certificate does not chain to "
            "the pinned CA (--ca) or does not name this address"
        )
    if "WRONG_VERSION_NUMBER" in details:
        return VerifierNotAuthenticated(
            f"cannot authenticate the verifier at {address}: it does not speak TLS "
            "(a plaintext verifier needs --insecure)"
        )
    return None


def _guarded(call: Callable[[], T], address: str) -> Callable[[], T]:
    """``call``, with a failed TLS authentication turned into ``VerifierNotAuthenticated``
    (which ``retry`` does not retry)."""

    def run() -> T:
        try:
            return call()
        except grpc.RpcError as exc:
            refusal = authentication_failure(exc, address)
            if refusal is not None:
                raise refusal from None
            raise

    return run


def choose_ek(tpm: Tpm, ek_alg: str) -> tuple[str, bytes]:
    """The EK algorithm to use and its certificate (b"" when the TPM has none)."""
    if ek_alg != "auto":
        return ek_alg, tpm.read_ek_certificate(ek_alg)
    for alg in ("rsa", "ecc"):
        cert = tpm.read_ek_certificate(alg)
        if cert:
            return alg, cert
    return "rsa", b""


def enroll(config: AgentConfig, stop: threading.Event, force: bool = False) -> str:
    """Enroll this TPM (if not already) and return the device id."""
    state = AgentState(config.state_dir)
    if config.new_ak:
        log.warning("forgetting the saved AK: a new one needs an operator's approval")
        state.forget_ak()
    with Tpm.open(config.tcti) as tpm:
        ak = tpm.load_or_create_ak(state, config.ak_alg)
        record = state.enrollment()
        if record is not None and record.ak_name == ak.name.hex() and not force:
            log.info("already enrolled as %s", record.device_id)
            return record.device_id
        alg, cert = choose_ek(tpm, config.ek_alg)
        ek = tpm.create_ek(alg)
        with config_channel(config) as ch:
            stub = pb_grpc.AgentStub(ch)
            request = pb.StartEnrollmentRequest(
                ek_certificate=cert,
                ek_public=ek.public,
                ak_public=ak.public,
                labels=dict(config.labels or {}),
                ek_intermediates=list(config.ek_intermediates),
            )
            started = retry(
                _guarded(
                    lambda: stub.StartEnrollment(request, timeout=config.timeout),
                    config.verifier,
                ),
                stop,
                what="StartEnrollment",
            )
            proof = tpm.activate_credential(
                ak, ek, started.credential_blob, started.encrypted_secret
            )
            done = retry(
                lambda: stub.FinishEnrollment(
                    pb.FinishEnrollmentRequest(challenge_id=started.challenge_id, proof=proof),
                    timeout=config.timeout,
                ),
                stop,
                Backoff(max_attempts=3),
                what="FinishEnrollment",
            )
    state.save_enrollment(done.device_id, config.verifier, ak.name.hex())
    log.info(
        "enrolled as %s (%s, count %d)",
        done.device_id,
        pb.EnrollmentOutcome.Name(done.outcome),
        done.enrollment_count,
    )
    return str(done.device_id)


def read_event_log(path: Path | None) -> bytes:
    if path is None:
        return b""
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_EVENT_LOG + 1)
    except FileNotFoundError:
        log.warning("no event log at %s; attesting without one", path)
        return b""
    if len(data) > MAX_EVENT_LOG:
        raise ValueError(f"event log {path} is larger than {MAX_EVENT_LOG} bytes")
    return data


def evidence_for(config: AgentConfig, device_id: str, challenge: pb.Challenge) -> pb.AttestRequest:
    """Quote the challenge's selection with the AK and gather the event log."""
    state = AgentState(config.state_dir)
    with Tpm.open(config.tcti) as tpm:
        ak = tpm.load_or_create_ak(state, config.ak_alg)
        quote = tpm.quote(
            ak, challenge.nonce, challenge.selection.bank, list(challenge.selection.pcrs)
        )
    return pb.AttestRequest(
        device_id=device_id,
        nonce=challenge.nonce,
        quote=quote.attest,
        signature=quote.signature,
        pcr_values=[pb.PcrValue(pcr=i, digest=d) for i, d in sorted(quote.pcr_values.items())],
        event_log=read_event_log(config.event_log),
    )


def attest_once(
    config: AgentConfig,
    device_id: str,
    stop: threading.Event,
    ch: grpc.Channel | None = None,
) -> pb.Verdict:
    """Challenge, quote, send; returns the verdict (raises on a refused attestation).

    ``ch``: a channel to reuse (``attest-agent run`` keeps one: its TLS connection, while it
    lasts, spares a handshake per attestation); None: a channel for this attestation only.
    With an IMA log, only the entries after the verifier's accepted count are sent; when the
    verifier answers ``ImaLogRequired`` the cursor is dropped and the whole log is sent with
    a fresh challenge (once).
    """
    if ch is None:
        with config_channel(config) as own:
            return _attest_with_ima(config, device_id, stop, own)
    return _attest_with_ima(config, device_id, stop, ch)


def _attest_with_ima(
    config: AgentConfig, device_id: str, stop: threading.Event, ch: grpc.Channel
) -> pb.Verdict:
    if config.ima_log is None:
        return _attest(config, device_id, stop, ch, None)
    try:
        return _attest(config, device_id, stop, ch, config.ima_log)
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.FAILED_PRECONDITION:
            raise
        if not str(exc.details()).startswith(ima.IMA_LOG_REQUIRED):
            raise
        log.info("the verifier asks for the whole IMA log: %s", exc.details())
        ima.forget_cursor(config.state_dir)
        return _attest(config, device_id, stop, ch, config.ima_log)


def _attest(
    config: AgentConfig,
    device_id: str,
    stop: threading.Event,
    ch: grpc.Channel,
    ima_log: Path | None,
) -> pb.Verdict:
    stub = pb_grpc.AgentStub(ch)
    challenge = retry(
        _guarded(
            lambda: stub.GetChallenge(
                pb.GetChallengeRequest(device_id=device_id), timeout=config.timeout
            ),
            config.verifier,
        ),
        stop,
        what="GetChallenge",
    )
    request = evidence_for(config, device_id, challenge)
    sent = None
    if ima_log is not None:
        cursor = ima.load_cursor(config.state_dir)
        sent = ima.payload(ima_log, ima.read_boot_id(config.boot_id), cursor)
        request.ima_log, request.ima_offset = sent.data, sent.first
    # Not retried on its own: the nonce is single use. A transient failure here
    # restarts from a fresh challenge (the caller's loop).
    response = _guarded(lambda: stub.Attest(request, timeout=config.timeout), config.verifier)()
    if sent is not None:
        ima.save_cursor(config.state_dir, ima.advanced(sent, response.ima_entries))
    return response.verdict
