"""Avro Object Container Files written from datum bytes that are already encoded.

Push records travel as single-object encoded datums; an archive file holds the same datums under
the same schema, so the archive copies them into blocks as they are instead of decoding and
re-encoding each record (the Avro spec, "Object Container Files"). Compressing a block is the
only costly step left and zlib-ng and zstandard release the GIL while they do it, so a block can
be finished on another thread.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import Final

from zlib_ng import zlib_ng

from schemas._records import join

MAGIC: Final = b"Obj\x01"
CODECS: Final = ("deflate", "null", "zstandard")


def _long(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _deflate(data: bytes) -> bytes:
    # Avro's deflate is raw RFC 1951: no zlib header, no checksum (negative window bits).
    # zlib-ng writes the same format as zlib, at the same level, faster (bench/RESULTS.md).
    compressor = zlib_ng.compressobj(zlib_ng.Z_DEFAULT_COMPRESSION, zlib_ng.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush()


def compressor(codec: str) -> Callable[[bytes], bytes]:
    if codec == "deflate":
        return _deflate
    if codec == "null":
        return bytes
    if codec == "zstandard":
        try:
            if sys.version_info >= (3, 14):
                from compression import zstd
            else:  # its backport, which fastavro reads such files with too
                from backports import zstd
        except ImportError as exc:
            raise ValueError(
                "the zstandard codec needs backports.zstd: pip install 'uplink[zstandard]'"
            ) from exc
        compress: Callable[[bytes], bytes] = zstd.compress
        return compress
    raise ValueError(f"unknown Avro codec {codec!r}, expected one of {', '.join(CODECS)}")


class BlockFormat:
    """The header and blocks of one container file; ``block`` is safe to call from any thread."""

    def __init__(
        self,
        schema: str,
        codec: str,
        sync: bytes | None = None,
        meta: dict[str, bytes] | None = None,
    ) -> None:
        """``schema``: the writer schema's JSON text, ``codec``: one of CODECS, ``meta``: more
        header metadata (readers ignore keys they do not know)."""
        self._compress = compressor(codec)
        self.sync = os.urandom(16) if sync is None else sync
        if len(self.sync) != 16:
            raise ValueError("an Avro sync marker is 16 bytes")
        metadata = {
            "avro.schema": schema.encode(),
            "avro.codec": codec.encode(),
            **(meta or {}),
        }
        entries = b"".join(
            _long(len(key)) + key.encode() + _long(len(value)) + value
            for key, value in metadata.items()
        )
        self.header = MAGIC + _long(len(metadata)) + entries + _long(0) + self.sync

    def block(self, datums: Sequence[bytes], skip: int = 0) -> bytes:
        """A block of the datums, each without its first ``skip`` bytes (a record's framing)."""
        data = self._compress(join(datums, skip))
        return _long(len(datums)) + _long(len(data)) + data + self.sync
