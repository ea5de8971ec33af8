"""The schema evolution policy (schemas/EVOLUTION.md), checked in CI.

Every ``schemas/*.avsc`` must be FULL_TRANSITIVE compatible with each of its released versions
(``schemas/released/<name>-v<N>.avsc``): a reader of it reads every released writer's records,
and a reader of every released version reads its records. The check is Apache Avro's own
reader/writer compatibility (the ``avro`` package), and the registry's: the released versions
registered in order under a subject at FULL_TRANSITIVE, then the candidate checked by the
registry's /compatibility endpoint. Then the v2 of the push schema (tests/schemas/evolution)
shows a change end to end, without a broker: records and archive files of v1 read as v2, and
records of v2 read by a v1 reader, through the registry.
"""

from __future__ import annotations

import json
import uuid
from importlib import resources
from pathlib import Path
from typing import Any

import avro.schema
import orjson
import pytest
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from consumers.archive.replay import archived_records
from schemas import PushCodec, UnknownSchema, load_push_schema
from schemas.container import BlockFormat
from schemas.head import HeadReader
from schemas.writers import released_schemas
from tests.conftest import EXAMPLES
from uplink.registry.client import SchemaRegistry, SubjectSchemas
from uplink.settings import RegistrySettings

pytestmark = pytest.mark.anyio

SCHEMAS = sorted(Path(str(resources.files("schemas"))).glob("*.avsc"))
RELEASED = Path(str(resources.files("schemas").joinpath("released")))
# v1 as released, and the tests' v2 of it: whatever push.avsc has become since.
V1 = released_schemas("push")[0]
V2 = json.loads(Path(__file__).parent.joinpath("evolution", "push-v2.avsc").read_text())


def incompatibilities(reader: dict[str, Any], writer: dict[str, Any]) -> list[str]:
    """Why records of ``writer`` cannot be read as ``reader`` (Apache Avro's checker)."""
    result = ReaderWriterCompatibilityChecker().get_compatibility(
        avro.schema.parse(json.dumps(reader)), avro.schema.parse(json.dumps(writer))
    )
    if result.compatibility is SchemaCompatibilityType.compatible:
        return []
    return sorted(result.messages) or [str(result.incompatibilities)]


def full_transitive(candidate: dict[str, Any], released: list[dict[str, Any]]) -> list[str]:
    """FULL_TRANSITIVE: each way, against every released version."""
    problems = []
    for version, old in enumerate(released, 1):
        problems += [
            f"v{version} records, read as the candidate: {why}"
            for why in incompatibilities(candidate, old)
        ]
        problems += [
            f"the candidate's records, read as v{version}: {why}"
            for why in incompatibilities(old, candidate)
        ]
    return problems


def test_released_versions_are_numbered_from_one_without_gaps() -> None:
    names = sorted(path.name for path in RELEASED.glob("*.avsc"))
    for schema in SCHEMAS:
        versions = sorted(
            int(name.removeprefix(f"{schema.stem}-v").removesuffix(".avsc"))
            for name in names
            if name.startswith(f"{schema.stem}-v")
        )
        assert versions == list(range(1, len(versions) + 1)), schema.name
        assert versions, f"{schema.name} has no released version in schemas/released/"


@pytest.mark.parametrize("path", SCHEMAS, ids=lambda path: path.name)
def test_each_schema_is_full_transitive_with_its_released_versions(path: Path) -> None:
    candidate = json.loads(path.read_text())
    released = released_schemas(path.stem)
    assert full_transitive(candidate, released) == []
    # Released versions are never edited: they must also be compatible among themselves.
    for index, version in enumerate(released):
        assert full_transitive(version, released[:index]) == []


def test_push_schemas_keep_the_head_layout_the_workers_read() -> None:
    for schema in [load_push_schema(), *released_schemas("push"), V2]:
        assert HeadReader.fits(schema)


def with_fields(fields: list[dict[str, Any]]) -> dict[str, Any]:
    return {**load_push_schema(), "fields": fields}


V1_FIELDS = load_push_schema()["fields"]
BREAKING = {
    # A new reader cannot read old records: the field has no default to fill in.
    "a field added without a default": with_fields(
        [*V1_FIELDS, {"name": "added", "type": "string"}]
    ),
    # An old reader of the new records misses a field it has no default for.
    "a field without a default removed": with_fields(
        [field for field in V1_FIELDS if field["name"] != "messageId"]
    ),
    "a field's type changed": with_fields(
        [
            {**field, "type": "long"} if field["name"] == "messageId" else field
            for field in V1_FIELDS
        ]
    ),
}


@pytest.mark.parametrize("change", sorted(BREAKING))
def test_the_check_refuses_a_breaking_change(change: str) -> None:
    assert full_transitive(BREAKING[change], released_schemas("push")) != []


def test_the_v2_of_the_tests_passes_the_check() -> None:
    assert full_transitive(V2, released_schemas("push")) == []


async def test_the_registry_judges_as_the_check_does(schema_registry: str) -> None:
    subject = f"test.evolution.{uuid.uuid4().hex[:8]}-value"
    async with SchemaRegistry(RegistrySettings(schema_registry)) as registry:
        await registry.set_compatibility(subject)
        for released in released_schemas("push"):
            await registry.register(subject, json.dumps(released))
        assert await registry.is_compatible(subject, json.dumps(load_push_schema()))
        assert await registry.is_compatible(subject, json.dumps(V2))
        for change, schema in sorted(BREAKING.items()):
            assert not await registry.is_compatible(subject, json.dumps(schema)), change


# --- v2 end to end --------------------------------------------------------------------------

BODIES = [path.read_bytes() for path in sorted(EXAMPLES.glob("*.json"))]


def v1_records() -> tuple[PushCodec, list[dict[str, Any]]]:
    codec = PushCodec(V1)
    return codec, [codec.parse(body, 1_700_000_000_000 + n) for n, body in enumerate(BODIES)]


def v2_codec(**options: Any) -> PushCodec:
    return PushCodec(V2, **options)


def test_a_v2_reader_reads_v1_records_and_archive_files(tmp_path: Path) -> None:
    v1, records = v1_records()
    v2 = v2_codec()
    for record in records:
        decoded = v2.decode(v1.encode(record))
        assert decoded == {**record, "deliveredVia": None}
    heads = v2.heads([v1.encode(record) for record in records])
    assert heads.ids == [record["messageId"] for record in records] and not heads.failed
    # An archive file of v1 records (the file carries its writer's schema): read as v2.
    path = tmp_path / "v1.avro"
    fmt = BlockFormat(v1.text, "deflate")
    path.write_bytes(fmt.header + fmt.block([v1.encode(record) for record in records], skip=10))
    assert [r["messageId"] for r in archived_records(path, V2)] == [r["messageId"] for r in records]
    assert all(r["deliveredVia"] is None for r in archived_records(path, V2))


def test_a_v1_archive_reader_reads_a_file_of_v2_records(tmp_path: Path) -> None:
    v2 = v2_codec()
    records = [{**v2.parse(body, 1_700_000_000_000), "deliveredVia": "edge-7"} for body in BODIES]
    path = tmp_path / "v2.avro"
    fmt = BlockFormat(v2.text, "null")
    path.write_bytes(fmt.header + fmt.block([v2.encode(record) for record in records], skip=10))
    read = list(archived_records(path, V1))  # as a reader that has only v1
    assert [orjson.loads(r["raw"]) for r in read] == [orjson.loads(body) for body in BODIES]
    assert all("deliveredVia" not in r for r in read)


async def test_a_v1_consumer_reads_v2_records_through_the_registry(schema_registry: str) -> None:
    subject = f"test.evolution.{uuid.uuid4().hex[:8]}-value"
    v2 = v2_codec()
    async with SchemaRegistry(RegistrySettings(schema_registry)) as registry:
        await registry.set_compatibility(subject)
        v1_id = await registry.register(subject, PushCodec(V1).text)
        single_object = [
            v2.encode({**v2.parse(body, 1), "deliveredVia": "edge-7"}) for body in BODIES
        ]
        v2.frame_with(await registry.register(subject, v2.text))  # refused were it incompatible
        assert v2.schema_id is not None and v2.schema_id != v1_id
        confluent = [v2.encode({**v2.parse(body, 1), "deliveredVia": "edge-7"}) for body in BODIES]

        # Without the registry a v1 reader knows no v2 writer: the record is not misread.
        with pytest.raises(UnknownSchema):
            PushCodec(V1).decode(confluent[0])
        with pytest.raises(UnknownSchema):
            PushCodec(V1, known=[]).decode(single_object[0])

        lookup = SubjectSchemas(registry, subject)
        by_id = PushCodec(V1, known=[], lookup=lookup)
        by_fingerprint = PushCodec(V1, known=[], lookup=lookup)
        assert by_id.heads(confluent).failed  # not known yet
        assert await by_id.learn(confluent)  # the id's schema
        assert await by_fingerprint.learn(single_object)  # among the subject's versions
        assert not await by_id.learn(confluent + single_object)  # nothing left to learn
    for v1, values in ((by_id, confluent), (by_fingerprint, single_object)):
        heads = v1.heads(values)
        assert not heads.failed
        decoded = [v1.decode(value) for value in values]
        assert [orjson.loads(r["raw"]) for r in decoded] == [orjson.loads(b) for b in BODIES]
        assert heads.ids == [r["messageId"] for r in decoded]
        assert all("deliveredVia" not in r for r in decoded)
