"""The verifier's token signing keys: an ES256 key ring in one directory, rotated with overlap.

Layout of the ring directory (mode 0700, created on first start)::

    ring.json      {"format": 1, "active": KID, "retired": [{"kid", "retire_by", "jwk"}]}
    KID.pem        the active private key, PKCS#8 PEM, mode 0600
    .lock          flock(2) taken while the ring is created, loaded or rotated

Invariants:
- a ``kid`` is the RFC 7638 JWK thumbprint of the public key (base64url SHA-256 of the
  canonical ``{"crv","kty","x","y"}`` JSON), checked again on every load;
- a private key is only ever read from a regular file (no symlink) owned by us with no
  group/other permission bits, inside a directory with none either; anything else raises
  ``KeyFileInsecure`` and the verifier does not start;
- only the active key's private half is on disk: ``rotate`` writes the new key, then
  ``ring.json`` (atomically: temporary file, fsync, rename, fsync of the directory), then
  deletes the old private key. The old public key stays in the JWKS until ``retire_by`` =
  rotation time + overlap, and is then dropped;
- the clock is passed in (``now``, POSIX seconds); nothing here reads the time.

Replicas sharing the directory call ``reload`` periodically. Choose an overlap longer than the
reload interval plus the longest token lifetime: a token signed just before a rotation must
keep verifying until its ``exp``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from verifier.token.errors import KeyFileInsecure, KeyRingError, TokenMalformed
from verifier.token.jws import ALGORITHM, b64url_decode, b64url_encode, strict_json_object

RING_FILE = "ring.json"
LOCK_FILE = ".lock"
_FORMAT = 1
_MAX_KEY_FILE_BYTES = 16 * 1024
_MAX_RING_FILE_BYTES = 256 * 1024
_COORDINATE_BYTES = 32


def _coordinates(public_key: ec.EllipticCurvePublicKey) -> tuple[str, str]:
    numbers = public_key.public_numbers()
    return (
        b64url_encode(numbers.x.to_bytes(_COORDINATE_BYTES, "big")),
        b64url_encode(numbers.y.to_bytes(_COORDINATE_BYTES, "big")),
    )


def jwk_thumbprint(public_key: ec.EllipticCurvePublicKey) -> str:
    """RFC 7638 thumbprint: base64url(SHA-256(canonical JWK of the required members))."""
    x, y = _coordinates(public_key)
    canonical = f'{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}'
    return b64url_encode(hashlib.sha256(canonical.encode("ascii")).digest())


def public_jwk(public_key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    """The public JWK served in the JWKS: ``kty crv x y kid alg use``."""
    x, y = _coordinates(public_key)
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": x,
        "y": y,
        "kid": jwk_thumbprint(public_key),
        "alg": ALGORITHM,
        "use": "sig",
    }


def public_key_from_jwk(jwk: Mapping[str, object]) -> ec.EllipticCurvePublicKey:
    """Parse a public P-256 JWK strictly; a private member (``d``) is refused."""
    if "d" in jwk:
        raise KeyRingError("a JWKS must not contain private keys (member 'd')")
    if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
        raise KeyRingError("only EC P-256 keys are accepted")
    if jwk.get("alg", ALGORITHM) != ALGORITHM or jwk.get("use", "sig") != "sig":
        raise KeyRingError(f"key is not for {ALGORITHM} signatures")
    x, y = jwk.get("x"), jwk.get("y")
    if not isinstance(x, str) or not isinstance(y, str):
        raise KeyRingError("JWK needs x and y")
    try:
        xb, yb = b64url_decode(x), b64url_decode(y)
    except TokenMalformed as exc:
        raise KeyRingError(f"JWK coordinates: {exc}") from exc
    if len(xb) != _COORDINATE_BYTES or len(yb) != _COORDINATE_BYTES:
        raise KeyRingError("JWK coordinates must be 32 bytes each")
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + xb + yb)
    except ValueError as exc:
        raise KeyRingError("JWK point is not on P-256") from exc


@dataclass(frozen=True)
class SigningKey:
    """A private ES256 key and its ``kid``."""

    kid: str
    private_key: ec.EllipticCurvePrivateKey

    @classmethod
    def from_private_key(cls, private_key: ec.EllipticCurvePrivateKey) -> SigningKey:
        if not isinstance(private_key.curve, ec.SECP256R1):
            raise KeyRingError("signing key must be on P-256")
        return cls(kid=jwk_thumbprint(private_key.public_key()), private_key=private_key)

    @classmethod
    def generate(cls) -> SigningKey:
        return cls.from_private_key(ec.generate_private_key(ec.SECP256R1()))

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self.private_key.public_key()

    def public_jwk(self) -> dict[str, str]:
        return public_jwk(self.public_key)

    def pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


@dataclass(frozen=True)
class RetiredKey:
    """A former signing key: verifies (is in the JWKS) while ``now < retire_by``."""

    kid: str
    retire_by: float
    public_key: ec.EllipticCurvePublicKey


class KeyRing:
    """The active signing key and the retired keys that still verify. See the module docstring."""

    def __init__(self, directory: Path, active: SigningKey, retired: tuple[RetiredKey, ...]):
        self.directory = directory
        self._active = active
        self._retired = retired

    @classmethod
    def open(cls, directory: Path | str, now: float) -> KeyRing:
        """Load the ring in ``directory``; on first start create it with a new key."""
        path = Path(directory)
        _ensure_private_directory(path)
        with _locked(path):
            if not (path / RING_FILE).exists():
                key = SigningKey.generate()
                _write_private_key(path, key)
                _write_ring(path, key.kid, ())
                return cls(path, key, ())
            return cls._load(path, now)

    @classmethod
    def open_existing(cls, directory: Path | str, now: float) -> KeyRing:
        """Load the ring in ``directory``; never creates one (for export and rotation)."""
        path = Path(directory)
        if not (path / RING_FILE).is_file():
            raise KeyRingError(f"{path}: no token signing key ring (serve creates it)")
        _ensure_private_directory(path)
        with _locked(path):
            return cls._load(path, now)

    @classmethod
    def _load(cls, path: Path, now: float) -> KeyRing:
        active_kid, retired = _read_ring(path)
        active = _read_private_key(path, active_kid)
        return cls(path, active, tuple(r for r in retired if r.retire_by > now))

    def reload(self, now: float) -> None:
        """Pick up a rotation made by another process sharing the directory (replicas)."""
        with _locked(self.directory):
            fresh = self._load(self.directory, now)
        self._active, self._retired = fresh.signing_key, fresh.retired

    @property
    def signing_key(self) -> SigningKey:
        return self._active

    @property
    def retired(self) -> tuple[RetiredKey, ...]:
        return self._retired

    def rotate(self, now: float, overlap_seconds: float) -> SigningKey:
        """Make a new key the signer; the old one verifies until ``now + overlap_seconds``."""
        if overlap_seconds < 0:
            raise KeyRingError("rotation overlap must not be negative")
        _ensure_private_directory(self.directory)
        with _locked(self.directory):
            current = self._load(self.directory, now)  # another process may have rotated
            new = SigningKey.generate()
            old = RetiredKey(
                current.signing_key.kid, now + overlap_seconds, current.signing_key.public_key
            )
            retired = (*current.retired, old)
            _write_private_key(self.directory, new)
            _write_ring(self.directory, new.kid, retired)
            with contextlib.suppress(FileNotFoundError):
                (self.directory / f"{old.kid}.pem").unlink()
            _fsync_directory(self.directory)
        self._active, self._retired = new, retired
        return new

    def public_keys(self, now: float) -> dict[str, ec.EllipticCurvePublicKey]:
        """``kid -> public key`` of every key that verifies at ``now`` (active first)."""
        keys = {self._active.kid: self._active.public_key}
        for retired in self._retired:
            if retired.retire_by > now:
                keys[retired.kid] = retired.public_key
        return keys

    def jwks(self, now: float) -> dict[str, list[dict[str, str]]]:
        """The JWKS (RFC 7517) of the keys that verify at ``now``."""
        return {"keys": [public_jwk(key) for key in self.public_keys(now).values()]}

    def export_jwks(self, path: Path | str, now: float) -> None:
        """Write ``jwks(now)`` to ``path`` atomically (mode 0644: it is public)."""
        data = json.dumps(self.jwks(now), indent=2, sort_keys=True).encode() + b"\n"
        _atomic_write(Path(path), data, 0o644)


def _ensure_private_directory(path: Path) -> None:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700)
    st = path.stat()
    if not stat.S_ISDIR(st.st_mode):
        raise KeyRingError(f"{path} is not a directory")
    _refuse_insecure(path, st, "key directory", "700")


def _refuse_insecure(path: Path, st: os.stat_result, what: str, mode: str) -> None:
    if st.st_mode & 0o077:
        raise KeyFileInsecure(
            f"{what} {path} has mode {stat.S_IMODE(st.st_mode):04o}: group/other must have no "
            f"access to a token signing key (run: chmod {mode} {path})"
        )
    if st.st_uid != os.geteuid():
        raise KeyFileInsecure(f"{what} {path} is owned by uid {st.st_uid}, not by this process")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _read_private_key(path: Path, kid: str) -> SigningKey:
    key_path = path / f"{kid}.pem"
    try:
        fd = os.open(key_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise KeyRingError(f"cannot open signing key {key_path}: {exc.strerror}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyRingError(f"signing key {key_path} is not a regular file")
        _refuse_insecure(key_path, st, "signing key file", "600")
        data = os.read(fd, _MAX_KEY_FILE_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > _MAX_KEY_FILE_BYTES:
        raise KeyRingError(f"signing key {key_path} is too large")
    try:
        private_key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyRingError(f"signing key {key_path} is not an unencrypted PEM key") from exc
    if not isinstance(private_key, ec.EllipticCurvePrivateKey):
        raise KeyRingError(f"signing key {key_path} is not an EC key")
    key = SigningKey.from_private_key(private_key)
    if key.kid != kid:
        raise KeyRingError(f"signing key {key_path} does not match its kid {kid}")
    return key


def _write_private_key(path: Path, key: SigningKey) -> None:
    _atomic_write(path / f"{key.kid}.pem", key.pem(), 0o600)


def _write_ring(path: Path, active: str, retired: tuple[RetiredKey, ...]) -> None:
    ring = {
        "format": _FORMAT,
        "active": active,
        "retired": [
            {"kid": r.kid, "retire_by": r.retire_by, "jwk": public_jwk(r.public_key)}
            for r in retired
        ],
    }
    _atomic_write(path / RING_FILE, json.dumps(ring, indent=2).encode() + b"\n", 0o600)


def _read_ring(path: Path) -> tuple[str, tuple[RetiredKey, ...]]:
    ring_path = path / RING_FILE
    try:
        data = ring_path.read_bytes()[: _MAX_RING_FILE_BYTES + 1]
    except OSError as exc:
        raise KeyRingError(f"cannot read {ring_path}: {exc.strerror}") from exc
    if len(data) > _MAX_RING_FILE_BYTES:
        raise KeyRingError(f"{ring_path} is too large")
    try:
        ring = strict_json_object(data, str(ring_path))
    except TokenMalformed as exc:
        raise KeyRingError(str(exc)) from exc
    active, entries = ring.get("active"), ring.get("retired")
    if (
        ring.get("format") != _FORMAT
        or not isinstance(active, str)
        or not isinstance(entries, list)
    ):
        raise KeyRingError(f"{ring_path}: expected format {_FORMAT} with 'active' and 'retired'")
    return active, tuple(_retired_entry(ring_path, entry) for entry in entries)


def _retired_entry(ring_path: Path, entry: object) -> RetiredKey:
    if not isinstance(entry, dict):
        raise KeyRingError(f"{ring_path}: retired entry is not an object")
    kid, retire_by, jwk = entry.get("kid"), entry.get("retire_by"), entry.get("jwk")
    if not isinstance(kid, str) or not isinstance(jwk, dict):
        raise KeyRingError(f"{ring_path}: retired entry needs kid and jwk")
    if isinstance(retire_by, bool) or not isinstance(retire_by, int | float):
        raise KeyRingError(f"{ring_path}: retired entry {kid} needs a numeric retire_by")
    public_key = public_key_from_jwk(jwk)
    if jwk_thumbprint(public_key) != kid:
        raise KeyRingError(f"{ring_path}: retired key does not match its kid {kid}")
    return RetiredKey(kid=kid, retire_by=float(retire_by), public_key=public_key)


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        try:
            os.fchmod(fd, mode)  # the umask may only have narrowed it; make it exact
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_directory(path.parent)


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
