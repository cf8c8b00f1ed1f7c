"""Every content hash trainlab computes, in one place: files, JSON-able values, source trees.

Manifests record file hashes (`sha256_file`) that readers check; resume checkpoints,
search studies and the params record use short digests of canonical JSON (`fingerprint`,
`digest`), so two runs share an identity exactly when their inputs are equal.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

SHORT = 16   # hex digits of a short digest: 64 bits, far from any collision among runs


def sha256_file(path: str | Path) -> str:
    """The SHA-256 of a file's bytes (hex): what manifests record and readers check."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def digest(blob: bytes, chars: int = SHORT) -> str:
    """A short SHA-256 of `blob`."""
    return hashlib.sha256(blob).hexdigest()[:chars]


def fingerprint(*parts: object) -> str:
    """Identity of a list of values (pydantic models, dicts, strings): equal exactly when they are."""
    blob = json.dumps([p.model_dump(mode="json") if hasattr(p, "model_dump") else p for p in parts],
                      sort_keys=True, default=str)
    return digest(blob.encode())


def source_tree_hash(root: Path) -> str:
    """SHA-256 over the Python files under `root` (relative path and content, __pycache__ left out)."""
    hasher = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts):
        hasher.update(path.relative_to(root).as_posix().encode() + b"\0")
        hasher.update(path.read_bytes() + b"\0")
    return hasher.hexdigest()
