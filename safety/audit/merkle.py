"""Merkle tree hashing and inclusion proofs as in Certificate Transparency (RFC 6962/9162).

leaf hash = SHA-256(0x00 || leaf), node hash = SHA-256(0x01 || left || right); a tree of n
leaves splits at the largest power of two below n. Written here (about fifty lines)
rather than taken from a package because the well-kept CT libraries are Go or tied to
X.509 certificates; the algorithms are the RFC's and are tested against it, bit flips
and wrong sizes included.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def root_from_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """The Merkle tree hash of leaves given by their leaf hashes (empty tree: SHA-256 of nothing)."""
    n = len(hashes)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashes[0]
    k = _split(n)
    return node_hash(root_from_leaf_hashes(hashes[:k]), root_from_leaf_hashes(hashes[k:]))


def inclusion_path(index: int, hashes: Sequence[bytes]) -> list[bytes]:
    """The audit path of leaf `index` in the tree of these leaf hashes (RFC 6962 2.1.1)."""
    n = len(hashes)
    if not 0 <= index < n:
        raise IndexError(f"leaf {index} is not in a tree of {n} leaves")
    if n == 1:
        return []
    k = _split(n)
    if index < k:
        return inclusion_path(index, hashes[:k]) + [root_from_leaf_hashes(hashes[k:])]
    return inclusion_path(index - k, hashes[k:]) + [root_from_leaf_hashes(hashes[:k])]


def root_from_path(index: int, size: int, leaf: bytes, path: Sequence[bytes]) -> bytes | None:
    """The root implied by a leaf hash and its audit path, or None if the path has the wrong shape."""
    if not 0 <= index < size:
        return None
    fn, sn = index, size - 1
    r = leaf
    for p in path:
        if sn == 0:
            return None
        if fn % 2 == 1 or fn == sn:
            r = node_hash(p, r)
            while fn % 2 == 0 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


def verify_inclusion(index: int, size: int, leaf: bytes, path: Sequence[bytes], root: bytes) -> bool:
    """True when `leaf` (a leaf hash) is leaf `index` of the tree of `size` leaves with `root`;
    any hash that is not 32 bytes long makes it False (a shortened hash proves nothing)."""
    if not _well_formed(leaf, root, *path):
        return False
    return root_from_path(index, size, leaf, path) == root


class MerkleFrontier:
    """Merkle tree hash of a growing list in O(log n) per leaf (the perfect subtrees' roots).

    `add_subtree` takes the root of a whole perfect subtree at once (a verifier that hashed a
    block of 2^k leaves elsewhere), and `root(extra)` the root with a few more perfect
    subtrees after the ones held: so the roots of a long log can be put together from
    blocks hashed in parallel."""

    def __init__(self) -> None:
        self._stack: list[tuple[int, bytes]] = []
        self.size = 0

    def add(self, leaf: bytes) -> None:
        self.add_subtree(1, leaf)

    def add_subtree(self, size: int, root: bytes) -> None:
        """Append a perfect subtree of `size` leaves (a power of two, at a multiple of `size`)."""
        if size & (size - 1) or self.size % size:
            raise ValueError(f"a subtree of {size} leaves cannot follow {self.size} leaves: it must be a power of "
                             "two starting at a multiple of its size")
        self._stack.append((size, root))
        self.size += size
        while len(self._stack) > 1 and self._stack[-1][0] == self._stack[-2][0]:
            (n, right), (_, left) = self._stack.pop(), self._stack.pop()
            self._stack.append((2 * n, node_hash(left, right)))

    def root(self, extra: Sequence[tuple[int, bytes]] = ()) -> bytes:
        """The tree hash of the leaves so far, followed by the perfect subtrees `extra` (as
        `add_subtree` takes them; this frontier is left as it is)."""
        stack = self._stack
        if extra:
            ahead = MerkleFrontier()
            ahead._stack, ahead.size = list(self._stack), self.size
            for size, root in extra:
                ahead.add_subtree(size, root)
            stack = ahead._stack
        if not stack:
            return hashlib.sha256(b"").digest()
        r = stack[-1][1]
        for _, h in reversed(stack[:-1]):
            r = node_hash(h, r)
        return r


HASH_BYTES = 32
"""Every node and leaf hash is a SHA-256 digest; a proof with another length is refused."""


def _well_formed(*hashes: bytes) -> bool:
    return all(isinstance(h, (bytes, bytearray)) and len(h) == HASH_BYTES for h in hashes)


def consistency_proof(size1: int, hashes: Sequence[bytes]) -> list[bytes]:
    """The proof that the tree of the first `size1` leaves is a prefix of the tree of all
    `hashes` (RFC 6962 2.1.2, SUBPROOF)."""
    n = len(hashes)
    if not 0 <= size1 <= n:
        raise IndexError(f"cannot prove size {size1} consistent with a tree of {n} leaves")
    if size1 in (0, n):
        return []

    def sub(m: int, leaves: Sequence[bytes], complete: bool) -> list[bytes]:
        if m == len(leaves):
            return [] if complete else [root_from_leaf_hashes(leaves)]
        k = _split(len(leaves))
        if m <= k:
            return sub(m, leaves[:k], complete) + [root_from_leaf_hashes(leaves[k:])]
        return sub(m - k, leaves[k:], False) + [root_from_leaf_hashes(leaves[:k])]

    return sub(size1, hashes, True)


def verify_consistency(size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]) -> bool:
    """True when `proof` shows the tree (size1, root1) is a prefix of the tree (size2, root2)
    (RFC 9162 2.1.4.2). Wrong sizes, hash lengths or shapes are refused, never guessed."""
    if not (0 <= size1 <= size2) or not _well_formed(root1, root2, *proof):
        return False
    if size1 == size2:
        return not proof and root1 == root2
    if size1 == 0:
        return not proof  # every tree extends the empty one
    if not proof:
        return False
    path = list(proof)
    if size1 & (size1 - 1) == 0:  # a power of two: the first tree is a complete subtree
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == root1 and sr == root2
