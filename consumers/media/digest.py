"""A push's ``sha256`` text → the 32-byte digest: base64 (the provider's pushes) or hex (Meta's)."""

from __future__ import annotations

import base64
import binascii


def sha256_bytes(text: str | None) -> bytes | None:
    """The digest, or None when ``text`` is neither 64 hex digits nor base64 of 32 bytes."""
    if not text:
        return None
    if len(text) == 64:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass  # 64 characters of base64 are not 32 bytes either; fall through to say so
    try:
        digest = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return digest if len(digest) == 32 else None
