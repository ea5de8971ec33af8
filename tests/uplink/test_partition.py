"""The C partitioner gives the Java client's partitions: Kafka's own test vectors, and aiokafka."""

from __future__ import annotations

import random

import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from uplink._partition import murmur2, partition
from uplink.kafka import java_partitioner

# org.apache.kafka.common.utils.UtilsTest#testMurmur2 (Java's signed ints).
JAVA = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize(("key", "expected"), JAVA.items())
def test_kafkas_own_vectors(key: bytes, expected: int) -> None:
    assert murmur2(key) == expected & 0xFFFFFFFF


def test_every_length_and_byte_agrees_with_aiokafka() -> None:
    rng = random.Random(7)
    for length in range(70):  # every tail length (0-3 bytes), short and long keys
        for _ in range(30):
            key = rng.randbytes(length)
            assert murmur2(key) == aiokafka_murmur2(key), key
            assert partition(key, 12) == (aiokafka_murmur2(key) & 0x7FFFFFFF) % 12, key


def test_a_conversation_key_and_misuse() -> None:
    key = b"8613800000001:8613912345678"
    assert partition(key, 12) == (aiokafka_murmur2(key) & 0x7FFFFFFF) % 12
    assert partition(bytearray(key), 12) == partition(key, 12)  # any buffer
    with pytest.raises(ValueError, match="count must be > 0"):
        partition(key, 0)
    with pytest.raises(TypeError):
        partition("text", 12)  # type: ignore[arg-type]


def test_the_clients_partitioner_is_aiokafkas_choice() -> None:
    partitions = list(range(12))
    rng = random.Random(3)
    for _ in range(500):
        key = rng.randbytes(rng.randrange(1, 40))
        assert java_partitioner(key, partitions, partitions) == DefaultPartitioner()(
            key, partitions, partitions
        )
    assert java_partitioner(None, partitions, [5]) == 5  # no key: any available partition
