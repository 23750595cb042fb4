"""RFC 6962 / RFC 9162 Merkle tree hashing, proofs, and their verification.

Invariants (RFC 9162 section 2.1):

- ``leaf_hash(d) = SHA-256(0x00 || d)``; ``node_hash(l, r) = SHA-256(0x01 || l || r)``; the root
  of the empty tree is ``SHA-256("")``. Every hash is 32 bytes; anything else is refused.
- The root of ``n > 1`` leaves hashes the perfect subtree of the largest power of two ``k < n``
  leaves with the root of the remaining ``n - k`` leaves. So a tree is a list of perfect
  subtrees of decreasing size (one per set bit of ``n``), folded from the right.
- ``CompactRange`` keeps only that list: O(log n) state, O(1) amortised appends, O(log n) roots.
  It is what a log keeps to append and sign; its state can be saved and restored.
- ``MerkleTree`` keeps every perfect-subtree hash (32 bytes each, about 2n in all) so that the
  root of any prefix, inclusion proofs (``PATH``, 2.1.3.1) and consistency proofs (``PROOF``,
  2.1.4.1) cost O(log n) hash lookups.
- ``verify_inclusion`` and ``verify_consistency`` follow 2.1.3.2 and 2.1.4.2 step by step; they
  return nothing and raise ``ProofInvalid`` (``ForkDetected`` for two different roots of one
  size).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from verifier.audit.errors import AuditMalformed, AuditRangeError, ForkDetected, ProofInvalid

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
MAX_PROOF_HASHES = 128  # a tree of 2**63 leaves needs at most 63 (inclusion) or 126 (consistency)
MAX_TREE_SIZE = 2**63 - 1

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


def leaf_hash(data: bytes) -> bytes:
    """The RFC 6962 hash of one leaf's data."""
    return hashlib.sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The RFC 6962 hash of an interior node from its two children."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def _require_hash(value: bytes, what: str) -> None:
    if len(value) != HASH_SIZE:
        raise AuditMalformed(f"{what} must be {HASH_SIZE} bytes, got {len(value)}")


def _largest_power_of_two_below(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def _fold_from_right(subtrees: Sequence[bytes]) -> bytes:
    """Root of perfect subtrees of decreasing size, left to right."""
    if not subtrees:
        return EMPTY_ROOT
    root = subtrees[-1]
    for left in reversed(subtrees[:-1]):
        root = node_hash(left, root)
    return root


class CompactRange:
    """The perfect-subtree roots covering leaves ``[0, size)``: enough to append and to sign.

    Invariant: ``len(subtrees) == popcount(size)``; ``subtrees[i]`` covers the i-th set bit of
    ``size`` from the most significant one, so the subtrees are of strictly decreasing size.
    """

    __slots__ = ("_size", "_subtrees")

    def __init__(self) -> None:
        self._size = 0
        self._subtrees: list[bytes] = []

    @classmethod
    def from_leaf_hashes(cls, leaf_hashes: Iterable[bytes]) -> CompactRange:
        compact = cls()
        for leaf in leaf_hashes:
            compact.append(leaf)
        return compact

    @classmethod
    def from_state(cls, size: int, subtrees: Sequence[bytes]) -> CompactRange:
        """Restore a saved state (``size`` and ``subtrees()``), checking its shape."""
        if not 0 <= size <= MAX_TREE_SIZE:
            raise AuditMalformed(f"tree size {size} is out of range")
        if len(subtrees) != size.bit_count():
            raise AuditMalformed(
                f"a tree of {size} leaves has {size.bit_count()} subtrees, got {len(subtrees)}"
            )
        for subtree in subtrees:
            _require_hash(subtree, "a subtree hash")
        compact = cls()
        compact._size = size
        compact._subtrees = list(subtrees)
        return compact

    @property
    def size(self) -> int:
        return self._size

    def subtrees(self) -> tuple[bytes, ...]:
        """The state to save: perfect-subtree roots, largest first."""
        return tuple(self._subtrees)

    def append(self, leaf: bytes) -> None:
        """Add one leaf hash: merges the equal-size subtrees it completes (O(1) amortised)."""
        _require_hash(leaf, "a leaf hash")
        node = leaf
        carry = self._size
        while carry & 1:
            node = node_hash(self._subtrees.pop(), node)
            carry >>= 1
        self._subtrees.append(node)
        self._size += 1

    def root(self) -> bytes:
        """The RFC 6962 root of the ``size`` leaves appended so far."""
        return _fold_from_right(self._subtrees)


class MerkleTree:
    """Every perfect-subtree hash of a sequence of leaf hashes, for roots and proofs.

    Level ``k`` is one ``bytearray`` of 32-byte hashes; hash ``i`` of level ``k`` is the root of
    leaves ``[i * 2**k, (i + 1) * 2**k)``. Only complete subtrees are stored, so an append
    never rewrites a stored hash.
    """

    __slots__ = ("_levels", "_size")

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        self._levels: list[bytearray] = [bytearray()]
        self._size = 0
        for leaf in leaf_hashes:
            self.append(leaf)

    @property
    def size(self) -> int:
        return self._size

    def append(self, leaf: bytes) -> None:
        _require_hash(leaf, "a leaf hash")
        levels = self._levels
        levels[0] += leaf
        index = self._size
        level = 0
        while index & 1:
            row = levels[level]
            end = (index + 1) * HASH_SIZE
            parent = node_hash(
                bytes(row[end - 2 * HASH_SIZE : end - HASH_SIZE]), bytes(row[end - HASH_SIZE : end])
            )
            level += 1
            if level == len(levels):
                levels.append(bytearray())
            levels[level] += parent
            index >>= 1
        self._size += 1

    def leaf(self, index: int) -> bytes:
        self._require_size(index + 1)
        return self._node(0, index)

    def root(self, size: int | None = None) -> bytes:
        """The root of the first ``size`` leaves (all of them by default)."""
        size = self._size if size is None else size
        if size < 0:
            raise AuditRangeError(f"tree size {size} is negative")
        self._require_size(size)
        return self._subtree_root(0, size)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """``PATH(index, D[size])`` of RFC 9162 2.1.3.1: sibling hashes, leaf level first."""
        if not 0 <= index < size:
            raise AuditRangeError(f"leaf {index} is not in a tree of {size} leaves")
        self._require_size(size)
        outer_first: list[bytes] = []
        low, high = 0, size
        while high - low > 1:
            split = low + _largest_power_of_two_below(high - low)
            if index < split:
                outer_first.append(self._subtree_root(split, high))
                high = split
            else:
                outer_first.append(self._subtree_root(low, split))
                low = split
        return outer_first[::-1]

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """``PROOF(old_size, D[new_size])`` of RFC 9162 2.1.4.1 (empty if the sizes are equal).

        There is none from the empty tree (``old_size == 0``): RFC 9162 defines ``0 < m``.
        """
        if not 0 < old_size <= new_size:
            raise AuditRangeError(f"no consistency proof from size {old_size} to {new_size}")
        self._require_size(new_size)
        if old_size == new_size:
            return []
        outer_first: list[bytes] = []
        low, high = 0, new_size
        whole_old_tree_is_known = True  # the "b" flag of SUBPROOF
        while old_size != high:
            split = low + _largest_power_of_two_below(high - low)
            if old_size <= split:
                outer_first.append(self._subtree_root(split, high))
                high = split
            else:
                outer_first.append(self._subtree_root(low, split))
                low = split
                whole_old_tree_is_known = False
        if not whole_old_tree_is_known:
            outer_first.append(self._subtree_root(low, high))
        return outer_first[::-1]

    def _require_size(self, size: int) -> None:
        if size > self._size:
            raise AuditRangeError(f"the log has {self._size} entries, not {size}")

    def _node(self, level: int, index: int) -> bytes:
        start = index * HASH_SIZE
        return bytes(self._levels[level][start : start + HASH_SIZE])

    def _subtree_root(self, start: int, end: int) -> bytes:
        """Root of leaves ``[start, end)``, a subtree of the RFC recursion.

        In that recursion ``start`` is a multiple of the smallest power of two >= ``end -
        start``, so greedy aligned perfect subtrees from ``start`` come in decreasing size.
        """
        subtrees: list[bytes] = []
        while start < end:
            level = (end - start).bit_length() - 1  # the largest subtree that fits ...
            if start:
                level = min(level, (start & -start).bit_length() - 1)  # ... aligned at start
            subtrees.append(self._node(level, start >> level))
            start += 1 << level
        return _fold_from_right(subtrees)


def _check_proof_shape(proof: Sequence[bytes]) -> None:
    if len(proof) > MAX_PROOF_HASHES:
        raise ProofInvalid(f"a proof of {len(proof)} hashes is longer than any tree needs")
    for item in proof:
        if len(item) != HASH_SIZE:
            raise ProofInvalid(f"a proof hash must be {HASH_SIZE} bytes, got {len(item)}")


def _check_sizes(*sizes: int) -> None:
    for size in sizes:
        if not 0 <= size <= MAX_TREE_SIZE:
            raise ProofInvalid(f"tree size {size} is out of range")


def _shift_until_odd_or_zero(fn: int, sn: int) -> tuple[int, int]:
    while fn and not fn & 1:
        fn >>= 1
        sn >>= 1
    return fn, sn


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """RFC 9162 2.1.3.2: ``leaf`` is leaf ``index`` of the tree of ``size`` leaves with ``root``."""
    _check_sizes(index, size)
    _check_proof_shape(proof)
    if len(leaf) != HASH_SIZE or len(root) != HASH_SIZE:
        raise ProofInvalid(f"leaf and root hashes must be {HASH_SIZE} bytes")
    if index >= size:
        raise ProofInvalid(f"leaf {index} is not in a tree of {size} leaves")
    fn, sn = index, size - 1
    computed = leaf
    for sibling in proof:
        if sn == 0:
            raise ProofInvalid("the inclusion proof is longer than the path to the root")
        if fn & 1 or fn == sn:
            computed = node_hash(sibling, computed)
            fn, sn = _shift_until_odd_or_zero(fn, sn)
        else:
            computed = node_hash(computed, sibling)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofInvalid("the inclusion proof is shorter than the path to the root")
    if computed != root:
        raise ProofInvalid(f"leaf {index} is not in the tree of {size} leaves with that root")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """RFC 9162 2.1.4.2: the tree ``(new_size, new_root)`` extends ``(old_size, old_root)``."""
    _check_sizes(old_size, new_size)
    _check_proof_shape(proof)
    if len(old_root) != HASH_SIZE or len(new_root) != HASH_SIZE:
        raise ProofInvalid(f"root hashes must be {HASH_SIZE} bytes")
    if new_size < old_size:
        raise ProofInvalid(f"a tree of {new_size} leaves cannot extend one of {old_size}")
    if old_size == 0:
        raise ProofInvalid("a consistency proof from the empty tree is meaningless")
    if old_size == new_size:
        if proof:
            raise ProofInvalid("a consistency proof between equal sizes must be empty")
        if old_root != new_root:
            raise ForkDetected(f"two different roots for the same tree size {old_size}")
        return
    if not proof:
        raise ProofInvalid("an empty consistency proof between different sizes")
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    old_computed = new_computed = path[0]
    for node in path[1:]:
        if sn == 0:
            raise ProofInvalid("the consistency proof is longer than the trees need")
        if fn & 1 or fn == sn:
            old_computed = node_hash(node, old_computed)
            new_computed = node_hash(node, new_computed)
            fn, sn = _shift_until_odd_or_zero(fn, sn)
        else:
            new_computed = node_hash(new_computed, node)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofInvalid("the consistency proof is shorter than the trees need")
    if old_computed != old_root or new_computed != new_root:
        raise ProofInvalid(
            f"the tree of {new_size} leaves does not extend the tree of {old_size} leaves"
        )
