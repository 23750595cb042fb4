"""The agent's TPM access, through tpm2-pytss (ESAPI) over a configurable TCTI.

``Tpm.open(tcti)`` returns a context manager; on exit every transient object and session this
module created is flushed and the ESAPI context and TCTI are closed, also after an error.

Keys:

- The EK is a primary in the endorsement hierarchy from the TCG EK Credential Profile's default
  template (``EK-RSA2048`` / ``EK-ECC256``, or the template the manufacturer left in NV), so it
  matches the EK certificate at 0x01c00002 (RSA) / 0x01c0000a (ECC). Its public area goes to the
  verifier as the marshalled TPM2B_PUBLIC.
- The AK is a restricted signing key (ECC P-256 ECDSA-SHA256 by default, RSA-2048
  RSASSA-SHA256 as an option; restricted|sign|fixedTPM|fixedParent|sensitiveDataOrigin|
  userWithAuth, never decrypt), created under the EK of the same algorithm (as keylime does):
  the EK is derived from the endorsement seed, so it is re-created identically after a restart
  or a reboot, and survives TPM2_Clear. Using the EK as a parent needs its policy,
  PolicySecret(TPM_RH_ENDORSEMENT), in a policy session. The parent is flushed once the AK
  is loaded (unless the caller created that EK itself): without a resource manager (swtpm)
  a TPM holds only three transient objects. An AK is loaded once per connection.
- The AK blobs are saved in the agent state on creation and reloaded afterwards. When the EK
  changed (another TPM, or a new endorsement seed) the old AK cannot exist any more: the agent
  logs it and creates a new AK, which the verifier treats as a new device. A saved AK that does
  not load under an unchanged EK is an error, never silently replaced.

Quotes: TPM2_Quote over the requested bank and PCRs with the nonce as qualifying data; the PCR
values are read afterwards (PCR_Read returns at most 8 PCRs a call; the loop maps values to
indices by the selection the TPM *returned*). The quote is retried when the PCR update counter
moved between quote and read, or when the values read do not hash to the quote's pcrDigest.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from agent.state import AgentState, AkBlobs

os.environ.setdefault("TSS2_LOG", "all+NONE")  # the TSS logs expected TPM errors on stderr

from tpm2_pytss import ESAPI, TSS2_Exception
from tpm2_pytss.constants import (
    ESYS_TR,
    TPM2_ALG,
    TPM2_CAP,
    TPM2_HT,
    TPM2_PT_NV,
    TPM2_RC,
    TPM2_SE,
    TPMA_NV,
    TPMA_OBJECT,
    TSS2_RC,
)
from tpm2_pytss.types import (
    TPM2B_ENCRYPTED_SECRET,
    TPM2B_ID_OBJECT,
    TPM2B_PRIVATE,
    TPM2B_PUBLIC,
    TPML_DIGEST_VALUES,
    TPML_PCR_SELECTION,
    TPMS_ATTEST,
    TPMS_PCR_SELECTION,
    TPMT_HA,
    TPMT_SYM_DEF,
    TPMU_HA,
)
from tpm2_pytss.utils import NoSuchIndex, create_ek_template

log = logging.getLogger(__name__)

EK_CERT_INDEX: Final = {"rsa": 0x01C00002, "ecc": 0x01C0000A}
EK_TEMPLATE: Final = {"rsa": "EK-RSA2048", "ecc": "EK-ECC256"}
BANKS: Final = {
    "sha1": (TPM2_ALG.SHA1, 20),
    "sha256": (TPM2_ALG.SHA256, 32),
    "sha384": (TPM2_ALG.SHA384, 48),
}
PCR_COUNT: Final = 24
QUOTE_ATTEMPTS: Final = 3
MAX_NONCE: Final = 64  # bytes: sizeof(TPMT_HA), the capacity of TPM2B_DATA
DEFAULT_NV_BUFFER: Final = 512  # the TCG PC Client minimum, if the TPM does not say
AK_ATTRIBUTES: Final = (
    TPMA_OBJECT.RESTRICTED
    | TPMA_OBJECT.SIGN_ENCRYPT
    | TPMA_OBJECT.FIXEDTPM
    | TPMA_OBJECT.FIXEDPARENT
    | TPMA_OBJECT.SENSITIVEDATAORIGIN
    | TPMA_OBJECT.USERWITHAUTH
)
# Created AKs are also noDA: the AK has an empty auth value, so dictionary-attack protection
# guards nothing and would only let a DA lockout (say, after power loss mid-command) stop the
# quotes. AKs saved before this without noDA still load (they need AK_ATTRIBUTES only).
AK_CREATE_ATTRIBUTES: Final = AK_ATTRIBUTES | TPMA_OBJECT.NODA
AK_TEMPLATE: Final = {"ecc": "ecc256:ecdsa-sha256:null", "rsa": "rsa2048:rsassa-sha256:null"}


class TpmError(Exception):
    """The TPM refused an operation, or what it returned is not what was asked for."""


class TpmUnavailable(TpmError):
    """The TPM cannot be reached at all (no device, no simulator listening)."""


# TPM warnings that pass: the TPM is busy, testing itself, or rate-limiting NV writes.
_BUSY = frozenset(
    {TPM2_RC.RETRY, TPM2_RC.YIELDED, TPM2_RC.TESTING, TPM2_RC.NV_RATE, TPM2_RC.NV_UNAVAILABLE}
)


def tpm_condition(exc: TpmError) -> str | None:
    """Why the TPM cannot be used *now* (worth a retry later), or ``None`` for a lasting error.

    "absent": not reachable (``TpmUnavailable``, or the TCTI lost the connection mid-command);
    "locked out": dictionary-attack lockout (a DA-protected object was used);
    "busy": a TPM warning that passes; "failed": the TPM is in failure mode (needs a reset).
    Anything else (a corrupt state file, an AK that no longer loads after a TPM clear, a
    malformed answer) needs an operator and is ``None``.
    """
    if isinstance(exc, TpmUnavailable):
        return "absent"
    cause = exc.__cause__
    if not isinstance(cause, TSS2_Exception):
        return None
    rc = int(cause.rc)
    if rc & TSS2_RC.RC_LAYER_MASK == TSS2_RC.TCTI_RC_LAYER:
        return "absent"
    if rc == TPM2_RC.LOCKOUT:
        return "locked out"
    if rc in _BUSY:
        return "busy"
    if rc == TPM2_RC.FAILURE:
        return "failed"
    return None


@dataclass(frozen=True)
class EkHandle:
    alg: str  # "rsa" or "ecc"
    template: str  # e.g. "EK-RSA2048"
    public: bytes  # marshalled TPM2B_PUBLIC
    handle: int  # ESYS_TR of the loaded primary


@dataclass(frozen=True)
class AkHandle:
    alg: str  # "ecc" or "rsa"
    name: bytes  # TPM name: nameAlg (2 bytes) || digest of the public area
    public: bytes  # marshalled TPM2B_PUBLIC
    handle: int  # ESYS_TR of the loaded key


@dataclass(frozen=True)
class QuoteResult:
    attest: bytes  # TPMS_ATTEST (the contents of TPM2B_ATTEST, no size prefix)
    signature: bytes  # marshalled TPMT_SIGNATURE
    pcr_values: dict[int, bytes]  # PCR index -> value, in the quoted bank


class Tpm:
    """One ESAPI connection; use as ``with Tpm.open(tcti) as tpm: ...``."""

    def __init__(self, esapi: ESAPI) -> None:
        self._esapi = esapi
        self._transient: list[int] = []
        self._eks: dict[str, EkHandle] = {}
        self._aks: dict[tuple[Path, str], AkHandle] = {}
        self._nv_buffer: int | None = None

    @classmethod
    def open(cls, tcti: str) -> Tpm:
        try:
            return cls(ESAPI(tcti))
        except TSS2_Exception as exc:
            raise TpmUnavailable(f"cannot open the TPM at {tcti!r}: {exc}") from exc

    def __enter__(self) -> Tpm:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Flush every transient object this instance created, then close ESAPI and TCTI."""
        if self._esapi.is_closed():
            return
        for handle in reversed(self._transient):
            self._flush(handle)
        self._transient.clear()
        self._eks.clear()
        self._aks.clear()
        self._esapi.close()

    @property
    def esapi(self) -> ESAPI:
        """The underlying context (for the simulator's provisioning; the agent never needs it)."""
        return self._esapi

    # -- endorsement -------------------------------------------------------------------

    def read_ek_certificate(self, alg: str) -> bytes:
        """The EK certificate from NV (DER as stored), or b"" when the index is absent."""
        index = _ek_cert_index(alg)
        try:
            return self.nv_read(index)
        except NoSuchIndex:
            return b""

    def create_ek(self, alg: str) -> EkHandle:
        """The EK primary for ``alg`` (created once per connection)."""
        if alg in self._eks:
            return self._eks[alg]
        template_name = EK_TEMPLATE.get(alg)
        if template_name is None:
            raise TpmError(f"unknown EK algorithm {alg!r} (rsa or ecc)")
        _, template = create_ek_template(template_name, self.nv_read)
        try:
            handle, public, *_ = self._esapi.create_primary(None, template, ESYS_TR.ENDORSEMENT)
        except TSS2_Exception as exc:
            raise TpmError(f"cannot create the {template_name} endorsement key: {exc}") from exc
        self._transient.append(handle)
        ek = EkHandle(alg=alg, template=template_name, public=public.marshal(), handle=handle)
        self._eks[alg] = ek
        return ek

    def nv_read(self, index: int) -> bytes:
        """Read a whole NV index in chunks; raises ``NoSuchIndex`` when it is not defined."""
        if index not in self._nv_indices(index):
            raise NoSuchIndex(index)
        try:
            nv = self._esapi.tr_from_tpmpublic(index)
        except TSS2_Exception as exc:
            raise TpmError(f"cannot open NV index 0x{index:08x}: {exc}") from exc
        try:
            nv_public, _ = self._esapi.nv_read_public(nv)
            size = int(nv_public.nvPublic.dataSize)
            auth = _nv_read_auth(int(nv_public.nvPublic.attributes), nv)
            chunk = self._nv_buffer_max()
            data = bytearray()
            while len(data) < size:
                part = self._esapi.nv_read(
                    nv, min(chunk, size - len(data)), len(data), auth_handle=auth
                )
                if not bytes(part):
                    raise TpmError(f"NV index 0x{index:08x}: empty read at {len(data)}")
                data += bytes(part)
            return bytes(data)
        except TSS2_Exception as exc:
            raise TpmError(f"cannot read NV index 0x{index:08x}: {exc}") from exc
        finally:
            self._esapi.tr_close(nv)

    # -- attestation key ---------------------------------------------------------------

    def load_or_create_ak(self, state: AgentState, alg: str) -> AkHandle:
        """The AK saved in ``state``, loaded under its EK parent; created and saved if none.

        The parent EK is flushed again afterwards unless the caller had created it: a TPM
        without a resource manager (swtpm) holds only three transient objects.
        """
        if alg not in AK_TEMPLATE:
            raise TpmError(f"unknown AK algorithm {alg!r} (ecc or rsa)")
        cached = self._aks.get((state.path, alg))
        if cached is not None:
            return cached
        blobs = state.ak_blobs()
        if blobs is not None and blobs.alg != alg:
            raise TpmError(
                f"the agent state in {state.path} holds an {blobs.alg} AK, not {alg}; "
                "use the saved algorithm or remove the state to enroll a new AK"
            )
        parent_alg = _template_alg(blobs.parent) if blobs is not None else alg
        keep_parent = parent_alg in self._eks
        parent = self.create_ek(parent_alg)
        try:
            ak = self._load_or_create_ak(state, alg, blobs, parent)
        finally:
            if not keep_parent:
                self._drop_ek(parent)
        self._aks[(state.path, alg)] = ak
        return ak

    def _load_or_create_ak(
        self, state: AgentState, alg: str, blobs: AkBlobs | None, parent: EkHandle
    ) -> AkHandle:
        if blobs is not None:
            if hashlib.sha256(parent.public).digest() == blobs.parent_digest:
                return self._load_ak(blobs, parent)
            log.warning(
                "this TPM's %s differs from the one the saved AK was created under "
                "(another TPM, or a new endorsement seed): creating a new AK",
                blobs.parent,
            )
            state.forget_ak()
        return self._create_ak(state, alg, parent)

    def _create_ak(self, state: AgentState, alg: str, parent: EkHandle) -> AkHandle:
        template = TPM2B_PUBLIC.parse(
            AK_TEMPLATE[alg], objectAttributes=AK_CREATE_ATTRIBUTES, nameAlg=TPM2_ALG.SHA256
        )
        with self._ek_policy_session() as session:
            try:
                private, public, *_ = self._esapi.create(
                    parent.handle, None, template, session1=session
                )
            except TSS2_Exception as exc:
                raise TpmError(f"cannot create the {alg} AK: {exc}") from exc
        blobs = AkBlobs(
            alg=alg,
            public=public.marshal(),
            private=private.marshal(),
            parent=parent.template,
            parent_digest=hashlib.sha256(parent.public).digest(),
        )
        state.save_ak_blobs(blobs)
        log.info("created a new %s AK", alg)
        return self._load_ak(blobs, parent)

    def _drop_ek(self, ek: EkHandle) -> None:
        self._eks.pop(ek.alg, None)
        if ek.handle in self._transient:
            self._transient.remove(ek.handle)
        self._flush(ek.handle)

    def _load_ak(self, blobs: AkBlobs, parent: EkHandle) -> AkHandle:
        try:
            public = _unmarshal_exact(TPM2B_PUBLIC, blobs.public, "AK public")
            private = _unmarshal_exact(TPM2B_PRIVATE, blobs.private, "AK private")
        except TpmError as exc:
            raise TpmError(f"saved AK blobs are corrupt: {exc}") from exc
        if int(public.publicArea.objectAttributes) & AK_ATTRIBUTES != AK_ATTRIBUTES:
            raise TpmError("saved AK public does not have the attributes of an AK")
        with self._ek_policy_session() as session:
            try:
                handle = self._esapi.load(parent.handle, private, public, session1=session)
            except TSS2_Exception as exc:
                raise TpmError(
                    f"the saved AK does not load under this TPM's {parent.template} ({exc}): "
                    "the TPM was cleared, or the state directory belongs to another TPM or is "
                    "damaged; after a TPM clear run 'attest-agent enroll --new-ak' and have an "
                    "operator approve the new AK"
                ) from exc
        self._transient.append(handle)
        name = bytes(self._esapi.tr_get_name(handle))
        return AkHandle(alg=blobs.alg, name=name, public=blobs.public, handle=handle)

    @contextlib.contextmanager
    def _ek_policy_session(self) -> Iterator[int]:
        """A policy session satisfying the EK's policy: PolicySecret(TPM_RH_ENDORSEMENT)."""
        try:
            session = self._esapi.start_auth_session(
                ESYS_TR.NONE,
                ESYS_TR.NONE,
                TPM2_SE.POLICY,
                TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL),
                TPM2_ALG.SHA256,
            )
        except TSS2_Exception as exc:
            raise TpmError(f"cannot start a policy session: {exc}") from exc
        try:
            self._esapi.policy_secret(ESYS_TR.ENDORSEMENT, session, b"", b"", b"", 0)
            yield session
        except TSS2_Exception as exc:
            raise TpmError(f"EK policy (PolicySecret endorsement) failed: {exc}") from exc
        finally:
            self._flush(session)

    # -- credential activation ---------------------------------------------------------

    def activate_credential(
        self, ak: AkHandle, ek: EkHandle, credential_blob: bytes, encrypted_secret: bytes
    ) -> bytes:
        """ActivateCredential: the secret the verifier bound to the AK's name and this EK.

        ``credential_blob`` is a marshalled TPM2B_ID_OBJECT and ``encrypted_secret`` a
        marshalled TPM2B_ENCRYPTED_SECRET, as TPM2_MakeCredential outputs them.
        """
        blob = _unmarshal_exact(TPM2B_ID_OBJECT, credential_blob, "credential blob")
        secret = _unmarshal_exact(TPM2B_ENCRYPTED_SECRET, encrypted_secret, "encrypted secret")
        with self._ek_policy_session() as session:
            try:
                recovered = self._esapi.activate_credential(
                    ak.handle, ek.handle, blob, secret, session1=ESYS_TR.PASSWORD, session2=session
                )
            except TSS2_Exception as exc:
                raise TpmError(f"ActivateCredential failed: {exc}") from exc
        return bytes(recovered)

    # -- quotes and PCRs ---------------------------------------------------------------

    def quote(self, ak: AkHandle, nonce: bytes, bank: str, pcrs: list[int]) -> QuoteResult:
        """TPM2_Quote of ``pcrs`` in ``bank`` over ``nonce``, with the values quoted."""
        selection = _pcr_list(pcrs)
        alg = _bank(bank)[0]
        if len(nonce) > MAX_NONCE:
            raise TpmError(f"the nonce is longer than {MAX_NONCE} bytes (TPM2B_DATA)")
        for attempt in range(QUOTE_ATTEMPTS):
            before, _ = self._read_pcrs(bank, selection[:1])
            try:
                attest, signature = self._esapi.quote(ak.handle, _selection(alg, selection), nonce)
            except TSS2_Exception as exc:
                raise TpmError(f"TPM2_Quote failed: {exc}") from exc
            counters, values = self._read_pcrs(bank, selection)
            attest_bytes = bytes(attest)
            if counters == before and _pcr_digest_matches(attest_bytes, values):
                return QuoteResult(attest_bytes, signature.marshal(), values)
            log.info("PCRs changed while quoting (attempt %d); quoting again", attempt + 1)
        raise TpmError(f"PCRs kept changing while quoting ({QUOTE_ATTEMPTS} attempts)")

    def read_pcrs(self, bank: str, pcrs: Iterable[int]) -> dict[int, bytes]:
        return self._read_pcrs(bank, _pcr_list(pcrs))[1]

    def _read_pcrs(self, bank: str, pcrs: list[int]) -> tuple[set[int], dict[int, bytes]]:
        """Values by index; the set of update counters seen (one element when consistent)."""
        alg, size = _bank(bank)
        values: dict[int, bytes] = {}
        counters: set[int] = set()
        while len(values) < len(pcrs):
            wanted = [i for i in pcrs if i not in values]
            try:
                counter, selected, digests = self._esapi.pcr_read(_selection(alg, wanted))
            except TSS2_Exception as exc:
                raise TpmError(f"PCR_Read failed: {exc}") from exc
            got = _selected_indices(selected, alg)
            if not got or not set(got) <= set(wanted) or len(got) != len(digests):
                raise TpmError(f"the TPM did not return {bank} PCRs {wanted} (bank allocated?)")
            for index, digest in zip(got, digests, strict=True):
                if len(bytes(digest)) != size:
                    raise TpmError(f"PCR {index} value has the wrong size for {bank}")
                values[index] = bytes(digest)
            counters.add(int(counter))
        return counters, values

    def extend(self, pcr: int, digests: Mapping[str, bytes]) -> None:
        """PCR_Extend of ``pcr`` with one digest per bank (what firmware does for an event)."""
        _pcr_list([pcr])
        entries = []
        for bank, digest in digests.items():
            alg, size = _bank(bank)
            if len(digest) != size:
                raise TpmError(f"a {bank} digest is {size} bytes, not {len(digest)}")
            entries.append(TPMT_HA(hashAlg=alg, digest=TPMU_HA(**{bank: digest})))
        if not entries:
            raise TpmError("extend needs at least one digest")
        try:
            self._esapi.pcr_extend(ESYS_TR.PCR0 + pcr, TPML_DIGEST_VALUES(entries))
        except TSS2_Exception as exc:
            raise TpmError(f"PCR_Extend of PCR {pcr} failed: {exc}") from exc

    # -- helpers -----------------------------------------------------------------------

    def _flush(self, handle: int) -> None:
        try:
            self._esapi.flush_context(handle)
        except TSS2_Exception as exc:
            log.debug("flush of 0x%x failed: %s", handle, exc)

    def _nv_indices(self, first: int) -> set[int]:
        """Defined NV indices from ``first`` on (a few; enough to test one for presence)."""
        try:
            _, data = self._esapi.get_capability(TPM2_CAP.HANDLES, first, 8)
        except TSS2_Exception as exc:
            raise TpmError(f"cannot list NV indices: {exc}") from exc
        return {int(h) for h in data.data.handles if int(h) >> 24 == TPM2_HT.NV_INDEX}

    def _nv_buffer_max(self) -> int:
        if self._nv_buffer is None:
            self._nv_buffer = DEFAULT_NV_BUFFER
            _, data = self._esapi.get_capability(TPM2_CAP.TPM_PROPERTIES, TPM2_PT_NV.BUFFER_MAX, 1)
            for prop in data.data.tpmProperties:
                if int(prop.property) == TPM2_PT_NV.BUFFER_MAX and int(prop.value) > 0:
                    self._nv_buffer = int(prop.value)
        return self._nv_buffer


def _ek_cert_index(alg: str) -> int:
    index = EK_CERT_INDEX.get(alg)
    if index is None:
        raise TpmError(f"unknown EK algorithm {alg!r} (rsa or ecc)")
    return index


def _template_alg(template: str) -> str:
    for alg, name in EK_TEMPLATE.items():
        if name == template:
            return alg
    raise TpmError(f"unknown AK parent template {template!r} in the agent state")


def _nv_read_auth(attributes: int, nv: int) -> int:
    """The authorisation to read an NV index: the index itself, else owner, else platform."""
    if attributes & TPMA_NV.AUTHREAD:
        return nv
    if attributes & TPMA_NV.OWNERREAD:
        return int(ESYS_TR.OWNER)
    if attributes & TPMA_NV.PPREAD:
        return int(ESYS_TR.PLATFORM)
    raise TpmError("NV index is readable only with a policy")


def _bank(bank: str) -> tuple[int, int]:
    found = BANKS.get(bank)
    if found is None:
        raise TpmError(f"unknown PCR bank {bank!r} (one of {sorted(BANKS)})")
    return found


def _pcr_list(pcrs: Iterable[int]) -> list[int]:
    result = sorted(set(pcrs))
    if not result:
        raise TpmError("empty PCR selection")
    if result[0] < 0 or result[-1] >= PCR_COUNT:
        raise TpmError(f"PCR indices must be in 0..{PCR_COUNT - 1}")
    return result


def _selection(alg: int, pcrs: Iterable[int]) -> TPML_PCR_SELECTION:
    bitmap = bytearray(3)
    for index in pcrs:
        bitmap[index // 8] |= 1 << (index % 8)
    return TPML_PCR_SELECTION(
        [TPMS_PCR_SELECTION(hash=alg, sizeofSelect=3, pcrSelect=bytes(bitmap))]
    )


def _selected_indices(selection: TPML_PCR_SELECTION, alg: int) -> list[int]:
    indices: list[int] = []
    for i in range(int(selection.count)):
        entry = selection.pcrSelections[i]
        if int(entry.hash) != alg:
            raise TpmError("PCR_Read answered for another bank")
        bitmap = bytes(entry.pcrSelect)[: int(entry.sizeofSelect)]
        indices += [8 * n + b for n, byte in enumerate(bitmap) for b in range(8) if byte >> b & 1]
    return sorted(indices)


def _pcr_digest_matches(attest: bytes, values: Mapping[int, bytes]) -> bool:
    """The quote's pcrDigest equals the hash of ``values`` in selection order."""
    parsed, _ = TPMS_ATTEST.unmarshal(attest)
    quoted = bytes(parsed.attested.quote.pcrDigest)
    name = {20: "sha1", 32: "sha256", 48: "sha384", 64: "sha512"}.get(len(quoted))
    if name is None:
        return False
    joined = b"".join(values[i] for i in sorted(values))
    return hashlib.new(name, joined).digest() == quoted


def _unmarshal_exact(cls: Any, data: bytes, what: str) -> Any:
    try:
        value, used = cls.unmarshal(data)
    except (TSS2_Exception, TypeError, ValueError) as exc:
        raise TpmError(f"{what} does not parse: {exc}") from exc
    if used != len(data):
        raise TpmError(f"{what} has {len(data) - used} trailing bytes")
    return value
