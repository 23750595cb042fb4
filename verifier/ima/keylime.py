"""Import a Keylime runtime policy (JSON) into the golden YAML ``runtime:`` section.

Keylime's format (``keylime/ima/ima.py``, runtime policy version 1): ``meta`` {version,
generator, timestamp}, ``release``, ``digests`` {path: [hex]}, ``excludes`` [Python regex,
matched at the start of the path], ``keyrings`` {keyring: [hex of the key]}, ``ima``
{``ignored_keyrings``, ``log_hash_alg``, ``dm_policy``}, ``ima-buf`` {name: [hex]},
``verification-keys`` (a JSON string: keyring -> JSON string {``pubkeys``: [base64 DER],
``keyids``: [int]}). The mapping:

- ``digests`` -> ``digests`` (a ``boot_aggregate`` entry is dropped: fleet-attest checks it
  against the quoted PCRs 0-9 instead);
- each exclude ``E`` -> ``{regex: "(?:E).*"}`` (Keylime's ``re.match`` is anchored at the start
  only); a pattern RE2 cannot compile is an error, one matching every path a warning;
- ``keyrings`` and ``ima-buf`` -> ``buf`` rules by name; ``ignored_keyrings`` -> ``ignore: true``
  (``*`` cannot be expressed and is reported: those entries become unknown entries);
- ``log_hash_alg`` -> ``template_hash``; ``verification-keys`` -> ``signatures.keys`` (PEM);
- ``dm_policy`` other than null is refused (device-mapper rules are not supported);
  ``meta`` and ``release`` are Keylime bookkeeping and are not carried over.

``import_keylime_policy`` raises ``PolicyViolation`` (and nothing else) for input it cannot
import faithfully.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from verifier.errors import PolicyViolation
from verifier.ima.policy import PathMatcher, PathPattern
from verifier.limits import DEFAULT_LIMITS, Limits

KEYLIME_KEYS = frozenset(
    {"meta", "release", "digests", "excludes", "keyrings", "ima", "ima-buf", "verification-keys"}
)
IMA_KEYS = frozenset({"ignored_keyrings", "log_hash_alg", "dm_policy"})


@dataclass(frozen=True)
class KeylimeImport:
    section: dict[str, Any]  # the ``runtime:`` section, ready for YAML or parse_runtime_section
    warnings: tuple[str, ...]


def import_keylime_policy(raw: bytes, *, limits: Limits = DEFAULT_LIMITS) -> KeylimeImport:
    """The section a Keylime runtime policy translates to, and what the operator must know."""
    if len(raw) > limits.max_runtime_policy_bytes:
        raise PolicyViolation(f"Keylime policy larger than {limits.max_runtime_policy_bytes}")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PolicyViolation(f"the Keylime policy is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise PolicyViolation("the Keylime policy is not a JSON object")
    unknown = set(data) - KEYLIME_KEYS
    if unknown:
        raise PolicyViolation(f"unknown Keylime policy keys: {', '.join(sorted(unknown))}")
    meta = data.get("meta")
    if not isinstance(meta, dict) or meta.get("version") != 1:
        raise PolicyViolation("not a Keylime runtime policy of version 1 (meta.version)")
    warnings: list[str] = []
    section: dict[str, Any] = {}
    ima = _mapping(data.get("ima", {}), "ima")
    if set(ima) - IMA_KEYS:
        raise PolicyViolation(f"unknown keys in ima: {', '.join(sorted(set(ima) - IMA_KEYS))}")
    if ima.get("dm_policy") is not None:
        raise PolicyViolation("ima.dm_policy (device-mapper rules) cannot be imported")
    section["template_hash"] = ima.get("log_hash_alg", "sha1")
    digests = _digest_map(data.get("digests", {}), "digests")
    if digests.pop("boot_aggregate", None) is not None:
        warnings.append(
            "digests['boot_aggregate'] dropped: boot_aggregate is checked against the quoted "
            "PCRs 0-9 instead"
        )
    if digests:
        section["digests"] = digests
    excludes = _excludes(data.get("excludes", []), warnings)
    if excludes:
        section["exclude"] = excludes
    buf = _buf_rules(data, ima, warnings)
    if buf:
        section["buf"] = buf
    keys = _verification_keys(data.get("verification-keys", ""))
    if keys:
        section["signatures"] = {"keys": keys}
    return KeylimeImport(section, tuple(warnings))


def _mapping(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PolicyViolation(f"{where} must be a JSON object")
    return value


def _digest_map(value: object, where: str) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for path, digests in _mapping(value, where).items():
        if not isinstance(digests, list) or not all(isinstance(d, str) for d in digests):
            raise PolicyViolation(f"{where}[{path!r}] must be a list of hex digests")
        result[path] = [d.lower() for d in digests]
    return result


def _excludes(value: object, warnings: list[str]) -> list[dict[str, str]]:
    if not isinstance(value, list) or not all(isinstance(e, str) for e in value):
        raise PolicyViolation("excludes must be a list of regular expressions")
    out: list[dict[str, str]] = []
    for number, text in enumerate(value):
        pattern = PathPattern("regex", f"(?:{text}).*")
        try:
            matcher = PathMatcher([pattern])
        except PolicyViolation as exc:
            raise PolicyViolation(f"excludes[{number}] {text!r}: {exc}") from None
        if matcher.matching_everything():
            warnings.append(
                f"excludes[{number}] {text!r} matches every path: it disables the runtime "
                "policy (kept as imported; review it)"
            )
        out.append({"regex": pattern.text})
    return out


def _buf_rules(
    data: Mapping[str, Any], ima: Mapping[str, Any], warnings: list[str]
) -> dict[str, dict[str, Any]]:
    rules: dict[str, dict[str, Any]] = {}
    for where in ("keyrings", "ima-buf"):
        for name, digests in _digest_map(data.get(where, {}), where).items():
            rule = rules.setdefault(name, {"digests": []})
            rule["digests"].extend(d for d in digests if d not in rule["digests"])
    ignored = ima.get("ignored_keyrings", [])
    if not isinstance(ignored, list) or not all(isinstance(n, str) for n in ignored):
        raise PolicyViolation("ima.ignored_keyrings must be a list of keyring names")
    for name in ignored:
        if name == "*":
            warnings.append(
                "ima.ignored_keyrings '*' not imported: name the keyrings to ignore in buf "
                "rules (until then their entries are unknown entries)"
            )
            continue
        rules[name] = {"ignore": True}
    return {name: rule for name, rule in rules.items() if rule.get("digests") or rule.get("ignore")}


def _verification_keys(value: object) -> list[dict[str, str]]:
    if value in ("", None):
        return []
    decoded: object = value
    try:
        while isinstance(decoded, str):
            decoded = json.loads(decoded)
    except ValueError:
        raise PolicyViolation("verification-keys is not JSON") from None
    keyrings = _mapping(decoded, "verification-keys")
    keys: list[dict[str, str]] = []
    for ring, encoded_ring in keyrings.items():
        content: object = encoded_ring
        try:
            while isinstance(content, str):
                content = json.loads(content)
        except ValueError:
            raise PolicyViolation(f"verification-keys[{ring!r}] is not JSON") from None
        ring_data = _mapping(content, f"verification-keys[{ring!r}]")
        pubkeys, keyids = ring_data.get("pubkeys", []), ring_data.get("keyids", [])
        if not isinstance(pubkeys, list) or not isinstance(keyids, list):
            raise PolicyViolation(f"verification-keys[{ring!r}] needs pubkeys and keyids lists")
        for number, encoded in enumerate(pubkeys):
            keys.append(_key(ring, number, encoded, keyids))
    return keys


def _key(ring: str, number: int, encoded: object, keyids: list[object]) -> dict[str, str]:
    try:
        der = base64.b64decode(str(encoded), validate=True)
    except (binascii.Error, ValueError):
        raise PolicyViolation(f"verification-keys[{ring!r}] key {number} is not base64") from None
    body = base64.encodebytes(der).decode("ascii")
    key: dict[str, str] = {
        "name": f"{ring}-{number}",
        "pem": f"-----BEGIN PUBLIC KEY-----\n{body}-----END PUBLIC KEY-----\n",
    }
    if number < len(keyids):
        keyid = keyids[number]
        if not isinstance(keyid, int) or not 0 <= keyid < 1 << 32:
            raise PolicyViolation(f"verification-keys[{ring!r}] keyid {number} is not 32-bit")
        key["keyid"] = f"{keyid:08x}"
    return key
