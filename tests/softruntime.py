"""An in-process verifier and software devices that run files after boot (IMA, PCR 10).

For the runtime what-if tests: the real ``Verifier`` with its SQLite store, the live golden
set from a directory and the Operator service on a Unix socket; devices quote with a
software AK (``simulator.softquote``), boot with the simulator's ``GOOD_A`` firmware and keep
an IMA list whose PCR 10 they extend as a 5.8+ kernel does (the bank's hash of the template
data), sending only the entries the verifier has not accepted yet, as the agent does.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from simulator.firmware import boot
from simulator.fleet import RUNTIME_LABELS
from simulator.ima import SIM_FILES, file_digest
from simulator.profiles import GOOD_A
from simulator.softquote import QuoteFields, SoftAk
from verifier.app import Attested, Verifier, open_trust
from verifier.evidence import Evidence
from verifier.ima import write
from verifier.ima.parse import parse_binary
from verifier.livegolden import LiveGolden
from verifier.records import DeviceRecord
from verifier.service.server import Listen, build_server
from verifier.store import Store, open_store
from verifier.token import KeyRing

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "golden_measurements"
_BOOT = boot(GOOD_A, lambda pcr, digests: None)
BOOT_PCRS = {i: _BOOT.expected_pcrs["sha256"].get(i, bytes(32)) for i in range(10)}


def golden_copy(directory: Path) -> Path:
    directory.mkdir(parents=True)
    for path in GOLDEN.glob("*.yaml"):
        shutil.copy(path, directory / path.name)
    return directory


def without_digest(directory: Path, path: str) -> None:
    """Drop ``path``'s allowed digests from the runtime section of sim-runtime.yaml."""
    file = directory / "sim-runtime.yaml"
    lines = file.read_text().splitlines(keepends=True)
    kept = [line for line in lines if not line.strip().startswith(f"{path}:")]
    assert len(kept) == len(lines) - 1, f"{path} is not in {file}"
    file.write_text("".join(kept))


@dataclass
class SoftRuntimeDevice:
    device_id: str
    ak: SoftAk = field(default_factory=SoftAk.generate)
    reset_count: int = 1
    clock: int = 1_000_000
    raw: list[bytes] = field(default_factory=list)
    pcr10: bytes = bytes(32)
    accepted: int = 0  # the agent's cursor: entries the verifier accepted in this boot

    def record(self) -> DeviceRecord:
        return DeviceRecord(
            device_id=self.device_id,
            ek_public=b"",
            ek_certificate=b"",
            ek_not_after=None,
            ak_public=self.ak.tpm2b_public,
            ak_name=self.ak.name,
            labels=dict(RUNTIME_LABELS),
            enrollment_count=1,
            enrolled_at=time.time(),
            profile="sim-runtime",
        )

    def boot(self) -> None:
        self.reset_count += 1
        self.raw, self.pcr10, self.accepted = [], bytes(32), 0
        self.append(write.boot_aggregate_entry(BOOT_PCRS, "sha256", through=9))

    def append(self, raw: bytes) -> None:
        (entry,) = parse_binary(raw).entries
        value = hashlib.sha256(entry.template_input).digest()
        self.pcr10 = hashlib.sha256(self.pcr10 + value).digest()
        self.raw.append(raw)

    def run(self, path: str, content: bytes | None = None) -> None:
        self.append(write.file_entry(path, file_digest(content or SIM_FILES[path])))

    def run_distribution(self) -> None:
        for path in SIM_FILES:
            self.run(path)

    @property
    def log(self) -> bytes:
        return b"".join(self.raw)

    def attest(self, verifier: Verifier, *, whole: bool = False) -> Attested:
        """Quote and send the entries past the cursor (all of them with ``whole``)."""
        challenge = verifier.get_challenge(self.device_id)
        values = {**BOOT_PCRS, 10: self.pcr10}
        quoted = {i: values.get(i, bytes(32)) for i in challenge.pcrs}
        self.clock += 60_000
        attest, signature = self.ak.quote(
            QuoteFields(
                challenge.nonce, "sha256", quoted, clock=self.clock, reset_count=self.reset_count
            )
        )
        offset = 0 if whole else self.accepted
        evidence = Evidence(
            self.device_id,
            challenge.nonce,
            attest,
            signature,
            tuple(quoted.items()),
            _BOOT.log,
            b"".join(self.raw[offset:]),
            offset,
        )
        attested = verifier.attest_evidence(evidence, want_token=False)
        self.accepted = attested.ima_entries
        return attested


@dataclass
class Served:
    verifier: Verifier
    store: Store
    db: Path
    golden: Path
    operator: grpc.Channel


@contextmanager
def served(work: Path, prepare: Callable[[Path], None] | None = None) -> Iterator[Served]:
    """A verifier over ``work``/verifier.db with a copy of the golden set (changed by
    ``prepare`` before the verifier starts), and an operator channel to its Operator service."""
    db = work / "verifier.db"
    golden = golden_copy(work / "golden")
    if prepare is not None:
        prepare(golden)
    store = open_store(db)
    live = LiveGolden.start(golden, store, time.time)
    trust, allowlist = open_trust(None, None)
    verifier = Verifier(store, trust, allowlist, live, KeyRing.open(work / "keys", time.time()))
    socket = work / "operator.sock"
    server, _ = build_server(verifier, Listen("127.0.0.1:0", operator_socket=socket), workers=4)
    server.start()
    channel = grpc.insecure_channel(f"unix:{socket}")
    try:
        yield Served(verifier, store, db, golden, channel)
    finally:
        channel.close()
        server.stop(None)
        store.close()
