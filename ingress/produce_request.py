"""Produce requests (v7) encoded, and their responses decoded, by hand instead of by aiokafka's
generic ``Struct`` codec.

aiokafka encodes a request and decodes its response by walking the message's schema field by
field, in Python; for a produce request of a dozen one-record batches that walk costs more than
the batches themselves (bench/RESULTS.md, "Ingress CPU a push"). A produce request is a fixed
shape: the transactional id, acks, the timeout, then per topic its name and per partition its
number and its record batch, which aiokafka's builder has already encoded (sequence numbers and
producer id included: nothing of idempotence is decided here). Its response is as fixed.

Only the wire format changes: the sender, its handler (retries, errors, the batches' futures)
and the connection are aiokafka's, and a broker that does not speak v7 gets aiokafka's own
classes. ``lean_produce_requests`` points one producer's sender at these; like
ingress/accumulator.py it reads aiokafka's private structures (the sender's
``_send_produce_req``, ``_in_flight``, ``_muted_partitions``), which tests/ingress check
against the installed release, and tests/ingress/test_produce_request.py checks the bytes
against aiokafka's own codec.
"""

from __future__ import annotations

import struct
from collections import defaultdict
from io import BytesIO
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.producer.sender import SendProduceReqHandler
from aiokafka.protocol.produce import ProduceRequest, ProduceRequest_v7, ProduceResponse_v7

_INT16 = struct.Struct(">h")
_INT32 = struct.Struct(">i")
_HEADER = struct.Struct(">hhi")  # api key, api version, correlation id
_ACKS_TIMEOUT = struct.Struct(">hi")
_PARTITION_HEAD = struct.Struct(">ii")  # partition, the batch's length
# partition, error code, base offset, log append time, log start offset
_PARTITION_ANSWER = struct.Struct(">ihqqq")


class LeanProduceResponseV7(ProduceResponse_v7):  # type: ignore[misc]
    @classmethod
    def decode(cls, data: BytesIO | bytes) -> LeanProduceResponseV7:
        buffer = data.read() if isinstance(data, BytesIO) else data
        (topic_count,) = _INT32.unpack_from(buffer, 0)
        at = 4
        topics = []
        for _ in range(topic_count):
            (length,) = _INT16.unpack_from(buffer, at)
            at += 2
            name = buffer[at : at + length].decode()
            at += length
            (partition_count,) = _INT32.unpack_from(buffer, at)
            at += 4
            partitions = []
            for _ in range(partition_count):
                partitions.append(_PARTITION_ANSWER.unpack_from(buffer, at))
                at += _PARTITION_ANSWER.size
            topics.append((name, partitions))
        (throttle_time_ms,) = _INT32.unpack_from(buffer, at)
        return cls(topics=topics, throttle_time_ms=throttle_time_ms)


def _string(text: str | None) -> bytes:
    """A nullable string: its length as an int16 (-1: null), then its UTF-8."""
    if text is None:
        return b"\xff\xff"
    encoded = text.encode()
    return _INT16.pack(len(encoded)) + encoded


class RequestHeader:
    """A request header (v1) already encoded."""

    __slots__ = ("_encoded",)

    def __init__(self, encoded: bytes) -> None:
        self._encoded = encoded

    def encode(self) -> bytes:
        return self._encoded


class LeanProduceRequestV7(ProduceRequest_v7):  # type: ignore[misc]
    RESPONSE_TYPE = LeanProduceResponseV7

    def build_request_header(self, correlation_id: int, client_id: str) -> RequestHeader:
        header = _HEADER.pack(self.API_KEY, self.API_VERSION, correlation_id)
        return RequestHeader(header + _string(client_id))

    def encode(self) -> bytes:
        fields = self.__dict__
        topics = fields["topics"]
        parts: list[Any] = [_string(fields["transactional_id"])]
        parts.append(_ACKS_TIMEOUT.pack(fields["required_acks"], fields["timeout"]))
        parts.append(_INT32.pack(len(topics)))
        for topic, partitions in topics:
            name = topic.encode()
            parts += (_INT16.pack(len(name)), name, _INT32.pack(len(partitions)))
            for partition, batch in partitions:
                parts += (_PARTITION_HEAD.pack(partition, len(batch)), batch)
        return b"".join(parts)


class LeanProduceRequest(ProduceRequest):  # type: ignore[misc]
    """A produce request that is encoded by hand where the broker takes v7."""

    def build(self, request_struct_class: Any) -> Any:
        if request_struct_class is ProduceRequest_v7:
            request_struct_class = LeanProduceRequestV7
        return super().build(request_struct_class)


class LeanProduceHandler(SendProduceReqHandler):  # type: ignore[misc]
    def create_request(self) -> LeanProduceRequest:
        topics: defaultdict[str, list[tuple[int, Any]]] = defaultdict(list)
        for tp, batch in self._batches.items():
            topics[tp.topic].append((tp.partition, batch.get_data_buffer()))
        transactions = self._sender._txn_manager
        return LeanProduceRequest(
            transactional_id=transactions.transactional_id if transactions is not None else None,
            required_acks=self._sender._acks,
            timeout=self._sender._request_timeout_ms,
            topics=list(topics.items()),
        )


def lean_produce_requests(producer: AIOKafkaProducer) -> None:
    """Make ``producer``'s sender send its produce requests through ``LeanProduceHandler``."""
    sender: Any = producer._sender

    async def send_produce_req(node_id: int, batches: dict[Any, Any]) -> None:
        # aiokafka's Sender._send_produce_req, with the handler swapped.
        await LeanProduceHandler(sender, batches).do(node_id)
        sender._in_flight.remove(node_id)
        for tp in batches:
            sender._muted_partitions.remove(tp)

    sender._send_produce_req = send_produce_req
