"""Enrollment: the EK certificate chain or allowlist, EK and AK checks, credential activation.

- ``tpmpublic``: TPM2B_PUBLIC parsed strictly into ``TpmPublic``; ``check_ek``, ``check_ak``.
- ``ekchain``: EK certificate path validation to the operators' CAs; the EK allowlist.
- ``der``: the little DER the path validation reads itself (real EK certificates bend DER).
- ``credential``: MakeCredential in software; the constant-time activation proof check.
- ``identity``: the device id, a function of the EK public key only.
"""
