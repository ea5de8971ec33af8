"""The media event: single-object framing, and Apache Avro (an independent implementation)
reads what MediaCodec writes."""

from __future__ import annotations

import datetime
import io
from importlib import resources

import avro.io
import avro.schema
import pytest

from schemas import MediaCodec, PushCodec, UnknownSchema
from schemas.framing import MARKER

AVSC = resources.files("schemas").joinpath("media.avsc").read_text(encoding="utf-8")
APACHE_SCHEMA = avro.schema.parse(AVSC)
CODEC = MediaCodec()
EVENT = {
    "messageId": "0ed131197c6c490dbae8f682687a8bc8",
    "mediaId": "1517236555680319",
    "type": "image",
    "sha256": "39756e915bec883ded07e479517469a8cb0b92871f2c1d6d2d0c9aa92b2380c1",
    "size": 102400,
    "mimeType": "image/jpeg",
    "filename": None,
    "uri": "file:///srv/media/sha256/39/39756e915bec883ded07e479517469a8cb0b92871f2c1d6d2d0c9aa92b2380c1",
    "fetchedAt": 1_700_000_000_123,
}


def test_the_frame_is_marker_fingerprint_datum_and_round_trips() -> None:
    data = CODEC.encode(EVENT)
    assert data[:2] == MARKER
    assert data[2:10] == CODEC.fingerprint
    assert CODEC.decode(data) == EVENT


def test_apache_avro_reads_the_datum() -> None:
    datum = CODEC.encode(EVENT)[10:]
    read = avro.io.DatumReader(APACHE_SCHEMA).read(avro.io.BinaryDecoder(io.BytesIO(datum)))
    fetched = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC) + datetime.timedelta(
        milliseconds=EVENT["fetchedAt"]  # type: ignore[arg-type]
    )
    assert read == {**EVENT, "fetchedAt": fetched}


def test_a_push_record_is_not_a_media_event() -> None:
    push = PushCodec()
    data = push.encode(push.parse(b'{"messageId": "m"}', 1))
    with pytest.raises(UnknownSchema):
        CODEC.decode(data)
