"""Container files written from encoded datums read back in fastavro, Apache avro and Avro C."""

from __future__ import annotations

import datetime
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import avro.datafile
import avro.io
import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import PushCodec, load_push_schema
from schemas.container import CODECS, BlockFormat
from schemas.framing import HEADER_SIZE
from tests.conftest import EXAMPLES

CODEC = PushCodec()
RECORDS = [
    CODEC.parse(path.read_bytes(), 1_700_000_000_123) for path in sorted(EXAMPLES.glob("*.json"))
]


def write(path: Path, codec: str, blocks: int = 3) -> list[dict[str, Any]]:
    """The 13 spec examples in ``blocks`` blocks; returns the records in file order."""
    fmt = BlockFormat(json.dumps(load_push_schema()), codec)
    datums = [CODEC.encode(record)[HEADER_SIZE:] for record in RECORDS]
    step = -(-len(datums) // blocks)
    path.write_bytes(
        fmt.header + b"".join(fmt.block(datums[i : i + step]) for i in range(0, len(datums), step))
    )
    return RECORDS


def plain(record: dict[str, Any]) -> dict[str, Any]:
    received = record["receivedAt"]  # the file's schema says timestamp-millis
    if isinstance(received, datetime.datetime):
        record = {**record, "receivedAt": int(received.timestamp() * 1000)}
    return record


@pytest.mark.parametrize("codec", CODECS)
def test_fastavro_reads_every_codec(tmp_path: Path, codec: str) -> None:
    expected = write(tmp_path / "f.avro", codec)
    with (tmp_path / "f.avro").open("rb") as stream:
        reader = fastavro.reader(stream)
        assert reader.codec == codec
        assert [plain(r) for r in reader] == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("codec", CODECS)
def test_apache_avro_reads_every_codec(tmp_path: Path, codec: str) -> None:
    expected = write(tmp_path / "f.avro", codec)
    with (tmp_path / "f.avro").open("rb") as stream:
        reader = avro.datafile.DataFileReader(stream, avro.io.DatumReader())
        assert [plain(r) for r in reader] == expected


@pytest.mark.parametrize("codec", ["null", "deflate"])  # Debian's Avro C has no zstandard
def test_avro_c_reads_null_and_deflate(tmp_path: Path, codec: str) -> None:
    assert shutil.which("avrocat"), "avrocat missing: apt-get install avro-bin"
    expected = write(tmp_path / "f.avro", codec)
    shown = subprocess.run(
        ["avrocat", str(tmp_path / "f.avro")], capture_output=True, check=True, timeout=60
    )
    ids = [json.loads(line)["messageId"] for line in shown.stdout.splitlines()]
    assert ids == [record["messageId"] for record in expected]


def test_an_unknown_codec_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="'snappy'"):
        BlockFormat(json.dumps(load_push_schema()), "snappy")


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.binary(min_size=HEADER_SIZE, max_size=80), max_size=30))
def test_a_block_of_framed_values_skips_their_framing(values: list[bytes]) -> None:
    fmt = BlockFormat("{}", "null", sync=bytes(16))
    datums = [value[HEADER_SIZE:] for value in values]
    assert fmt.block(values, skip=HEADER_SIZE) == fmt.block(datums)


def test_a_value_shorter_than_its_framing_is_refused() -> None:
    fmt = BlockFormat("{}", "null")
    with pytest.raises(ValueError, match=r"values\[1\] is not bytes of 10 bytes or more"):
        fmt.block([bytes(12), bytes(9)], skip=HEADER_SIZE)
