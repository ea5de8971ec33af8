"""The quarantine: bodies the ingress refused as not a push, kept as received with why
(``uplink-reason``) and when (``uplink-received-at``) in headers (ingress/push.py). List them,
show one, and POST them again to an ingress once the cause is fixed.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from uplink.exceptions import ConfigError
from uplink.http import HttpClients
from uplink.operate.readers import Readers
from uplink.operate.records import header_texts, last_header
from uplink.operate.window import Record, Scan, iso
from uplink.settings import Secret, Topics

DEFAULT_INGRESS = "http://127.0.0.1:8080/v1/uplink"


@dataclass(frozen=True, order=True)
class QuarantineRef:
    """``quarantine:<partition>:<offset>`` (or just ``<partition>:<offset>``)."""

    partition: int
    offset: int

    @classmethod
    def parse(cls, text: str, option: str = "REF") -> QuarantineRef:
        parts = text.split(":")
        if len(parts) == 3 and parts[0] == "quarantine":
            parts = parts[1:]
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            raise ConfigError(option, f"{text!r} is not quarantine:<partition>:<offset>")
        return cls(int(parts[0]), int(parts[1]))

    def __str__(self) -> str:
        return f"quarantine:{self.partition}:{self.offset}"


@dataclass(frozen=True)
class Quarantined:
    ref: QuarantineRef
    record: Record

    @property
    def reason(self) -> str:
        return last_header(self.record.headers, "uplink-reason") or ""

    @property
    def body(self) -> bytes:
        return self.record.value or b""

    @property
    def truncated(self) -> bool:
        return last_header(self.record.headers, "uplink-truncated") == "true"

    def row(self) -> dict[str, Any]:
        received = last_header(self.record.headers, "uplink-received-at")
        return {
            "ref": str(self.ref),
            "time": iso(
                int(received) if received and received.isdigit() else self.record.timestamp
            ),
            "reason": self.reason,
            "bytes": len(self.body),
            "truncated": self.truncated,
            "preview": self.body[:60].decode("utf-8", "replace"),
        }

    def detail(self) -> dict[str, Any]:
        return {
            **self.row(),
            "body": self.body.decode("utf-8", "replace"),
            "headers": header_texts(self.record),
        }


@dataclass(frozen=True)
class Reposted:
    ref: QuarantineRef
    status: int | None  # None: not sent (dry run, or a truncated body)
    answer: str

    def row(self) -> dict[str, Any]:
        return {"ref": str(self.ref), "status": self.status, "answer": self.answer}


class Quarantine:
    def __init__(self, readers: Readers, topics: Topics, scan: Scan | None = None) -> None:
        self._readers = readers
        self._topic = topics.quarantine
        self.scan = scan if scan is not None else Scan()

    async def bodies(
        self, reason: str | None, since_ms: int | None, limit: int | None = None
    ) -> AsyncIterator[Quarantined]:
        async with self._readers.reader(self.scan) as reader:
            shown = 0
            async with contextlib.aclosing(reader.read(self._topic, since_ms)) as records:
                async for record in records:
                    body = Quarantined(QuarantineRef(record.partition, record.offset), record)
                    if reason is not None and reason.lower() not in body.reason.lower():
                        continue
                    yield body
                    shown += 1
                    if limit is not None and shown >= limit:
                        return

    async def show(self, ref: QuarantineRef) -> Quarantined | None:
        async with self._readers.reader(self.scan) as reader:
            record = await reader.one(self._topic, ref.partition, ref.offset)
        return None if record is None else Quarantined(ref, record)

    async def repost(
        self,
        bodies: Sequence[Quarantined],
        url: str = DEFAULT_INGRESS,
        token: Secret | None = None,
        dry_run: bool = False,
        clients: HttpClients | None = None,
    ) -> list[Reposted]:
        """POST each body, as received, to the ingress; each answer as the ingress gave it."""
        answers: list[Reposted] = []
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token.reveal()}"
        make = clients or HttpClients()
        async with make(timeout=httpx.Timeout(30.0), limits=httpx.Limits()) as client:
            for body in bodies:
                if body.truncated:
                    answers.append(Reposted(body.ref, None, "not sent: only a prefix was kept"))
                    continue
                if dry_run:
                    answers.append(Reposted(body.ref, None, "would be sent (dry run)"))
                    continue
                content_type = last_header(body.record.headers, "uplink-content-type")
                sent = {**headers, **({"Content-Type": content_type} if content_type else {})}
                try:
                    response = await client.post(url, content=body.body, headers=sent)
                except httpx.HTTPError as exc:
                    answers.append(Reposted(body.ref, None, f"{type(exc).__name__}: {exc}"))
                    continue
                answers.append(Reposted(body.ref, response.status_code, response.text[:200]))
        return answers
