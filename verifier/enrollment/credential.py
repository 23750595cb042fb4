"""TPM2_MakeCredential in software, and the constant-time check of the activation proof.

``make_credential(ek, ak_name, secret)`` returns ``(TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET)``
byte for byte as a TPM's MakeCredential would (TPM 2.0 Part 1, "Credential Protection"):

1. a seed, protected to the EK: RSA -- a random nameAlg-sized seed, RSA-OAEP(nameAlg, MGF1
   nameAlg, label "IDENTITY\\0"); ECC -- an ephemeral key on the EK's curve, Z = x(d_e * Q_EK),
   seed = KDFe(nameAlg, Z, "IDENTITY\\0", x_e, x_EK), the encrypted secret is the ephemeral
   TPMS_ECC_POINT;
2. symKey = KDFa(nameAlg, seed, "STORAGE", AK name, "", EK symmetric key bits);
   encIdentity = AES-CFB(symKey, iv = 0, TPM2B_DIGEST(secret));
3. hmacKey = KDFa(nameAlg, seed, "INTEGRITY", "", "", digest bits);
   outerHMAC = HMAC_nameAlg(hmacKey, encIdentity || AK name);
4. TPM2B_ID_OBJECT = u16 size || TPM2B_DIGEST(outerHMAC) || encIdentity.

Only a TPM holding the EK's private key, with the AK named ``ak_name`` loaded, recovers
``secret`` (ActivateCredential checks the HMAC, so the AK name binds the credential to the AK).
The EK must already have passed ``check_ek`` (AES in CFB mode is assumed).
"""

from __future__ import annotations

import hmac
import secrets

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from cryptography.hazmat.primitives.kdf.kbkdf import KBKDFHMAC, CounterLocation, Mode

try:  # CFB lives in 'decrepit' since cryptography 47
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
except ImportError:  # pragma: no cover
    from cryptography.hazmat.primitives.ciphers.modes import CFB

from verifier.enrollment.tpmpublic import CURVES, TpmPublic
from verifier.errors import ActivationFailed, UnacceptableKey
from verifier.marshal import HASH_ALGS, tpm2b

SECRET_BYTES = 32
_IDENTITY = b"IDENTITY\x00"
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


def new_secret() -> bytes:
    return secrets.token_bytes(SECRET_BYTES)


def make_credential(ek: TpmPublic, ak_name: bytes, secret: bytes) -> tuple[bytes, bytes]:
    hash_alg = _hash(ek)
    if len(secret) > hash_alg.digest_size:
        raise ValueError(f"the secret is longer than a {hash_alg.name} digest")
    seed, encrypted_seed = _protect_seed(ek, hash_alg)
    sym_key = _kdfa(hash_alg, seed, b"STORAGE", ak_name, ek.symmetric.key_bits)
    encryptor = Cipher(algorithms.AES(sym_key), CFB(bytes(16))).encryptor()
    enc_identity = encryptor.update(tpm2b(secret)) + encryptor.finalize()
    hmac_key = _kdfa(hash_alg, seed, b"INTEGRITY", b"", hash_alg.digest_size * 8)
    outer = hmac.new(hmac_key, enc_identity + ak_name, hash_alg.name).digest()
    return tpm2b(tpm2b(outer) + enc_identity), tpm2b(encrypted_seed)


def check_proof(secret: bytes, proof: bytes) -> None:
    if not hmac.compare_digest(secret, proof):
        raise ActivationFailed("the activation proof does not match the credential secret")


def _hash(ek: TpmPublic) -> hashes.HashAlgorithm:
    name = HASH_ALGS.get(ek.name_alg)
    if name is None:
        raise UnacceptableKey(f"EK name algorithm {ek.name_alg:#06x} is not supported")
    return _HASHES[name]()


def _protect_seed(ek: TpmPublic, hash_alg: hashes.HashAlgorithm) -> tuple[bytes, bytes]:
    key = ek.public_key
    if isinstance(key, rsa.RSAPublicKey):
        seed = secrets.token_bytes(hash_alg.digest_size)
        oaep = padding.OAEP(padding.MGF1(type(hash_alg)()), type(hash_alg)(), _IDENTITY)
        return seed, key.encrypt(seed, oaep)
    size = CURVES[ek.curve][2]
    ephemeral = ec.generate_private_key(key.curve)
    point = ephemeral.public_key().public_numbers()
    ex, ey = point.x.to_bytes(size, "big"), point.y.to_bytes(size, "big")
    z = ephemeral.exchange(ec.ECDH(), key)
    ek_x = key.public_numbers().x.to_bytes(size, "big")
    kdfe = ConcatKDFHash(type(hash_alg)(), hash_alg.digest_size, _IDENTITY + ex + ek_x)
    return kdfe.derive(z), tpm2b(ex) + tpm2b(ey)


def _kdfa(
    hash_alg: hashes.HashAlgorithm, key: bytes, label: bytes, context: bytes, bits: int
) -> bytes:
    """SP 800-108 counter-mode KDF as TPM 2.0 Part 1 11.4.10.2 defines KDFa."""
    kdf = KBKDFHMAC(
        algorithm=type(hash_alg)(),
        mode=Mode.CounterMode,
        length=bits // 8,
        rlen=4,
        llen=4,
        location=CounterLocation.BeforeFixed,
        label=label,
        context=context,
        fixed=None,
    )
    return kdf.derive(key)
