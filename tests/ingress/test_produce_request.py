"""The hand-written produce request and response codec against aiokafka's own."""

from __future__ import annotations

from io import BytesIO

import pytest
from aiokafka.protocol.api import RequestHeader_v1
from aiokafka.protocol.produce import ProduceRequest, ProduceRequest_v7, ProduceResponse_v7

from ingress.produce_request import LeanProduceRequest, LeanProduceRequestV7, LeanProduceResponseV7

TOPICS = [
    ("uplink.messages.v1", [(0, b"\x00batch zero"), (11, bytearray(b"eleven" * 100))]),
    ("uplink.quarantine.v1", [(3, memoryview(b"q"))]),
]


@pytest.mark.parametrize("transactional_id", [None, "uplink-tx"])
def test_a_request_is_the_bytes_aiokafka_encodes(transactional_id: str | None) -> None:
    fields = {"transactional_id": transactional_id, "required_acks": -1, "timeout": 30000}
    stock = ProduceRequest(**fields, topics=TOPICS).build(ProduceRequest_v7)
    lean = LeanProduceRequest(**fields, topics=TOPICS).build(ProduceRequest_v7)
    assert type(lean) is LeanProduceRequestV7
    assert lean.encode() == stock.encode()
    assert lean.RESPONSE_TYPE is LeanProduceResponseV7
    header = lean.build_request_header(correlation_id=70_000, client_id="uplink")
    assert header.encode() == RequestHeader_v1(stock, 70_000, "uplink").encode()


def test_a_request_for_an_older_broker_is_aiokafkas() -> None:
    request = LeanProduceRequest(None, -1, 30000, TOPICS).prepare({0: (0, 5)})
    assert type(request).__name__ == "ProduceRequest_v5"


def test_a_response_reads_as_aiokafka_reads_it() -> None:
    topics = [
        ("uplink.messages.v1", [(0, 0, 41, -1, 0), (11, 6, -1, -1, -1)]),
        ("uplink.quarantine.v1", [(3, 0, 7, 1_700_000_000_000, 2)]),
    ]
    data = ProduceResponse_v7(topics=topics, throttle_time_ms=12).encode()
    stock = ProduceResponse_v7.decode(BytesIO(data))
    lean = LeanProduceResponseV7.decode(BytesIO(data))
    assert lean.topics == stock.topics == [(t, [tuple(p) for p in ps]) for t, ps in topics]
    assert lean.throttle_time_ms == stock.throttle_time_ms == 12
    assert lean.API_VERSION == 7
