"""A client of the Confluent-compatible schema registry API (Apicurio's ``/apis/ccompat/v7``,
Confluent's own), over httpx.

httpx is already how uplink speaks HTTP, and the API is five small JSON calls. The registry
clients that exist for Python (confluent-kafka's) are synchronous or come with librdkafka, a
second Kafka client beside aiokafka, for calls made a few times per process.

``SchemaRegistry`` caches what never changes (a schema by id, an id by subject and schema): a
process asks for each once, so the registry going down later touches no record already seen.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Callable
from typing import Any, Final

import httpx

from uplink.exceptions import UplinkError
from uplink.resources import Resource
from uplink.settings import RegistrySettings

log = logging.getLogger(__name__)

CONTENT_TYPE: Final = "application/vnd.schemaregistry.v1+json"
# Readers of the topic are several groups at several versions, and the topic is replayed:
# every version must read, and be read by, every other (schemas/EVOLUTION.md).
COMPATIBILITY: Final = "FULL_TRANSITIVE"
# How long a process that must not write before its schema is registered (the media worker)
# waits for the registry at start-up, before it exits 75 for its supervisor to restart it.
START_TIMEOUT: Final = 30.0


class RegistryError(UplinkError):
    """The registry refused a request for good (an incompatible schema, bad credentials)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RegistryUnavailable(RegistryError):
    """The registry did not answer, or answered 5xx/429: a later try may succeed."""

    retriable = True


class UnknownSchemaId(RegistryError):
    """The registry has no schema of that id (a record of another registry, or corrupt)."""


def subject(topic: str) -> str:
    """The topic-name strategy: the subject of a topic's record values."""
    return f"{topic}-value"


class SchemaRegistry(Resource):
    """The registry's API; ``start()`` opens its connection pool, ``stop()`` closes it."""

    def __init__(
        self, settings: RegistrySettings, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.settings = settings
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._schemas: dict[int, str] = {}
        self._ids: dict[tuple[str, str], int] = {}

    async def start(self) -> None:
        if self._client is not None:
            return
        settings = self.settings
        verify: ssl.SSLContext | bool = settings.verify
        if settings.verify and settings.ca_file:
            verify = ssl.create_default_context(cafile=settings.ca_file)
        auth = None
        if settings.username is not None and settings.password is not None:
            auth = httpx.BasicAuth(settings.username, settings.password.reveal())
        self._client = httpx.AsyncClient(
            base_url=settings.url,
            auth=auth,
            verify=verify,
            timeout=settings.timeout,
            transport=self._transport,
            headers={"accept": CONTENT_TYPE},
            trust_env=False,
        )

    async def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def register(self, subject: str, schema: str) -> int:
        """The id of ``schema`` under ``subject``, registering it as the next version when it is
        new (the registry refuses one incompatible with the subject's level: RegistryError)."""
        key = (subject, schema)
        if key not in self._ids:
            answer = await self._call("POST", f"/subjects/{subject}/versions", {"schema": schema})
            self._ids[key] = int(answer["id"])
            self._schemas.setdefault(self._ids[key], schema)
        return self._ids[key]

    async def set_compatibility(self, subject: str, level: str = COMPATIBILITY) -> None:
        await self._call("PUT", f"/config/{subject}", {"compatibility": level})

    async def compatibility(self, subject: str) -> str:
        answer = await self._call("GET", f"/config/{subject}")
        return str(answer.get("compatibilityLevel") or answer.get("compatibility"))

    async def is_compatible(self, subject: str, schema: str) -> bool:
        """Whether ``schema`` may become the subject's next version, at its level."""
        answer = await self._call(
            "POST", f"/compatibility/subjects/{subject}/versions/latest", {"schema": schema}
        )
        return bool(answer["is_compatible"])

    async def schema(self, schema_id: int) -> str:
        """The schema of an id (cached: an id never changes its schema)."""
        if schema_id not in self._schemas:
            try:
                answer = await self._call("GET", f"/schemas/ids/{schema_id}")
            except RegistryError as exc:
                if exc.status == 404:
                    missing = f"the registry has no schema id {schema_id}"
                    raise UnknownSchemaId(missing, 404) from exc
                raise
            self._schemas[schema_id] = str(answer["schema"])
        return self._schemas[schema_id]

    async def versions(self, subject: str) -> list[tuple[int, str]]:
        """(id, schema) of every version of a subject, oldest first; [] for no such subject."""
        try:
            numbers = await self._call("GET", f"/subjects/{subject}/versions")
        except RegistryError as exc:
            if exc.status == 404:
                return []
            raise
        found = []
        for number in numbers:
            answer = await self._call("GET", f"/subjects/{subject}/versions/{number}")
            schema_id = int(answer["id"])
            self._schemas.setdefault(schema_id, str(answer["schema"]))
            found.append((schema_id, self._schemas[schema_id]))
        return found

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        client = self._client
        if client is None:
            raise RegistryUnavailable("the registry client is not started")
        content = None if body is None else json.dumps(body)
        headers = None if body is None else {"content-type": CONTENT_TYPE}
        try:
            response = await client.request(method, path, content=content, headers=headers)
        except httpx.HTTPError as exc:  # transport errors and timeouts: try again later
            raise RegistryUnavailable(f"schema registry unreachable: {exc!r}") from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise RegistryUnavailable(
                f"schema registry answered {response.status_code}: {response.text[:300]}",
                response.status_code,
            )
        if response.status_code >= 400:
            raise RegistryError(
                f"schema registry refused {method} {path}: {response.status_code} "
                f"{response.text[:500]}",
                response.status_code,
            )
        return response.json()


class Registration(Resource):
    """One schema registered under one subject at start-up, at uplink's compatibility level;
    ``schema_id`` is set once it is. ``start()`` returns at once and registers in the
    background, retrying with backoff (a registry that is down, or refuses the schema, leaves
    the process not ready, saying why, until it accepts it); ``registered()`` waits for it."""

    def __init__(
        self,
        registry: SchemaRegistry,
        subject: str,
        schema: str,
        on_registered: Callable[[int], None] | None = None,
        wait: float | None = None,
    ) -> None:
        """``on_registered(id)`` runs once, before ``done`` turns true (the codec's
        ``frame_with``: no record written after it is framed otherwise). ``wait``: ``start()``
        returns only once it is registered (a worker that must not write before), or raises
        RegistryUnavailable (retriable: the process exits 75 for its supervisor to restart it)
        after that many seconds."""
        self.subject = subject
        self._registry = registry
        self._schema = schema
        self._on_registered = on_registered
        self._wait = wait
        self.schema_id: int | None = None
        self.problem = "not registered yet"
        self._done = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def done(self) -> bool:
        return self.schema_id is not None

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._register(), name=f"register {self.subject}")
        if self._wait is not None:
            try:
                await asyncio.wait_for(self.registered(), self._wait)
            except TimeoutError:
                await self.stop()
                raise RegistryUnavailable(
                    f"schema of {self.subject} not registered within {self._wait:g}s: "
                    f"{self.problem}"
                ) from None

    async def registered(self) -> int:
        await self._done.wait()
        assert self.schema_id is not None
        return self.schema_id

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _level(self) -> None:
        """The subject's compatibility level, uplink's; a registry that does not let this
        client set it (a managed one: 401/403) keeps its own, said once in the log."""
        try:
            await self._registry.set_compatibility(self.subject)
        except RegistryError as exc:
            if exc.retriable:
                raise
            log.warning(
                "compatibility of %s not set to %s (%s): the registry's own level applies",
                self.subject,
                COMPATIBILITY,
                exc,
            )

    async def _register(self) -> None:
        delay = 0.2
        while True:
            try:
                await self._level()
                schema_id = await self._registry.register(self.subject, self._schema)
            except RegistryError as exc:
                self.problem = str(exc)
                log.warning(
                    "schema of %s not registered (%s); retrying in %.1fs", self.subject, exc, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            if self._on_registered is not None:
                self._on_registered(schema_id)
            self.schema_id = schema_id
            self.problem = ""
            self._done.set()
            log.info("schema of %s registered: id %d", self.subject, schema_id)
            return


class SubjectSchemas:
    """The registry as a codec's source of writer schemas (schemas.registry.SchemaLookup): by
    id, and every version of one subject (for a single-object fingerprint it does not know)."""

    def __init__(self, registry: SchemaRegistry, subject: str) -> None:
        self._registry = registry
        self._subject = subject

    async def schema(self, schema_id: int) -> str:
        return await self._registry.schema(schema_id)

    async def versions(self) -> list[tuple[int, str]]:
        return await self._registry.versions(self._subject)
