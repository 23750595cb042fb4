"""The agent's two flows: enroll once per TPM, attest on every boot and before expiry.

The agent never imports the verifier: it speaks the v1 gRPC API and holds only what its
TPM produced. Its state directory keeps the AK blobs and the enrollment record, so a restart
or a reboot neither creates a new AK nor enrolls again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

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
    ima_log: Path | None = None  # the IMA measurement list; None: send none
    boot_id: Path = ima.DEFAULT_BOOT_ID  # changes every boot: the IMA cursor is per boot


def channel(address: str) -> grpc.Channel:
    return grpc.insecure_channel(
        address,
        options=[("grpc.max_send_message_length", 8 * 1024 * 1024)],
    )


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
        with channel(config.verifier) as ch:
            stub = pb_grpc.AgentStub(ch)
            request = pb.StartEnrollmentRequest(
                ek_certificate=cert,
                ek_public=ek.public,
                ak_public=ak.public,
                labels=dict(config.labels or {}),
            )
            started = retry(
                lambda: stub.StartEnrollment(request, timeout=config.timeout),
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


def attest_once(config: AgentConfig, device_id: str, stop: threading.Event) -> pb.Verdict:
    """Challenge, quote, send; returns the verdict (raises on a refused attestation).

    With an IMA log, only the entries after the verifier's accepted count are sent; when the
    verifier answers ``ImaLogRequired`` the cursor is dropped and the whole log is sent with
    a fresh challenge (once)."""
    if config.ima_log is None:
        return _attest(config, device_id, stop, None)
    try:
        return _attest(config, device_id, stop, config.ima_log)
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.FAILED_PRECONDITION:
            raise
        if not str(exc.details()).startswith(ima.IMA_LOG_REQUIRED):
            raise
        log.info("the verifier asks for the whole IMA log: %s", exc.details())
        ima.forget_cursor(config.state_dir)
        return _attest(config, device_id, stop, config.ima_log)


def _attest(
    config: AgentConfig, device_id: str, stop: threading.Event, ima_log: Path | None
) -> pb.Verdict:
    sent = None
    with channel(config.verifier) as ch:
        stub = pb_grpc.AgentStub(ch)
        challenge = retry(
            lambda: stub.GetChallenge(
                pb.GetChallengeRequest(device_id=device_id), timeout=config.timeout
            ),
            stop,
            what="GetChallenge",
        )
        request = evidence_for(config, device_id, challenge)
        if ima_log is not None:
            cursor = ima.load_cursor(config.state_dir)
            sent = ima.payload(ima_log, ima.read_boot_id(config.boot_id), cursor)
            request.ima_log, request.ima_offset = sent.data, sent.first
        # Not retried on its own: the nonce is single use. A transient failure here
        # restarts from a fresh challenge (the caller's loop).
        response = stub.Attest(request, timeout=config.timeout)
    if sent is not None:
        ima.save_cursor(config.state_dir, ima.advanced(sent, response.ima_entries))
    return response.verdict
