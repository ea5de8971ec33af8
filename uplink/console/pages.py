"""The console's pages: each a handler over the operator's library (``uplink.operate``),
rendered from a template in ``templates/`` with every value escaped."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import urlencode

import orjson
from jinja2 import Environment
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.types import Receive, Scope, Send

from schemas import PushCodec
from uplink.console.auth import COOKIE, Keys, Visitor, form
from uplink.console.charts import sparkline
from uplink.console.sampler import RULE, Sampler
from uplink.console.settings import ConsoleSettings
from uplink.exceptions import ConfigError, KafkaUnavailable
from uplink.mediastore import MediaReader
from uplink.operate.conversation import conversation
from uplink.operate.deadletters import WORKERS, DeadLetterQueues, Filter, Ref, show_row
from uplink.operate.quarantine import Quarantine, QuarantineRef
from uplink.operate.readers import Readers
from uplink.operate.records import decode_push
from uplink.operate.trace import Tracer, conversation_key
from uplink.operate.window import Scan, iso, parse_duration, parse_time

actions = logging.getLogger("uplink.console.actions")

Handler = Callable[[Request], Awaitable[Response]]
NAV = (
    ("/", "Overview"),
    ("/deadletters", "Dead letters"),
    ("/quarantine", "Quarantine"),
    ("/trace", "Trace"),
)


class Refused(Exception):
    """A request the console will not serve: its status and why, shown on the page."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status
        self.why = why


class Console:
    def __init__(
        self,
        settings: ConsoleSettings,
        sampler: Sampler,
        readers: Readers,
        keys: Keys,
        media: MediaReader,
        templates: Environment,
    ) -> None:
        self.settings = settings
        self.sampler = sampler
        self.readers = readers  # started and stopped with the app
        self.keys = keys
        self.media = media
        self.templates = templates
        self.codec = PushCodec()  # replaced at start-up by one that reads the registry, if any
        self.groups = {w: settings.groups.get(w, f"uplink-{w}") for w in WORKERS}

    def routes(self) -> list[tuple[str, Handler, list[str]]]:
        return [
            ("/", self._page(self.overview), ["GET"]),
            ("/healthz", self.healthz, ["GET"]),
            ("/login", self.login, ["GET", "POST"]),
            ("/deadletters", self._page(self.dead_letters), ["GET"]),
            ("/deadletters/redrive", self._page(self.redrive), ["POST"]),
            ("/deadletters/{ref}", self._page(self.dead_letter), ["GET"]),
            ("/quarantine", self._page(self.quarantine), ["GET"]),
            ("/quarantine/{ref}", self._page(self.quarantined), ["GET"]),
            ("/quarantine/{ref}/repost", self._page(self.repost), ["POST"]),
            ("/trace", self._page(self.trace), ["GET"]),
            ("/conversation", self._page(self.conversation), ["GET"]),
            ("/media/{digest}", self.media_object, ["GET"]),
        ]

    # --- rendering ---------------------------------------------------------------------------

    def render(
        self, request: Request, name: str, status: int = 200, **context: Any
    ) -> HTMLResponse:
        visitor: Visitor | None = request.scope.get("state", {}).get("visitor")
        page = self.templates.get_template(name).render(
            nav=NAV,
            path=request.url.path,
            visitor=visitor,
            csrf=self.keys.csrf(visitor) if visitor is not None else "",
            actions=self.settings.allow_actions,
            login=self.keys.token is not None,
            **context,
        )
        return HTMLResponse(page, status_code=status, headers={"cache-control": "no-store"})

    def _page(self, handler: Handler) -> Handler:
        """A handler whose refusals (bad input, an action not allowed) are pages too."""

        async def page(request: Request) -> Response:
            try:
                return await handler(request)
            except Refused as refused:
                return self.render(request, "refused.html", refused.status, why=refused.why)
            except ConfigError as bad:
                return self.render(request, "refused.html", 400, why=str(bad))
            except KafkaUnavailable as unavailable:  # a topic missing, no broker answering
                return self.render(request, "refused.html", 503, why=str(unavailable))

        return page

    async def unauthorized(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        response = self.render(
            request, "login.html", 401, next=_local(request.url.path), error=None
        )
        response.headers["www-authenticate"] = 'Bearer realm="uplink console"'
        await response(scope, receive, send)

    # --- open pages ----------------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        return PlainTextResponse("ok")

    async def login(self, request: Request) -> Response:
        if request.method == "GET":
            return self.render(
                request, "login.html", next=_local(request.query_params.get("next")), error=None
            )
        fields = await form(request)
        target = _local(_first(fields, "next"))
        if not self.keys.token_matches(_first(fields, "token")):
            address = request.client.host if request.client else "?"
            actions.warning("console: a login with a wrong token from %s", address)
            return self.render(
                request, "login.html", 401, next=target, error="That is not the token."
            )
        response = RedirectResponse(target, status_code=303)
        if self.keys.token is not None:
            response.set_cookie(
                COOKIE, self.keys.session_value(), httponly=True, samesite="strict", path="/"
            )
        return response

    # --- overview ------------------------------------------------------------------------------

    async def overview(self, request: Request) -> Response:
        sampler = self.sampler
        sample = sampler.latest()
        topics = self.settings.topics
        rows: list[dict[str, Any]] = []
        groups: list[Any] = []
        letters: list[dict[str, Any]] = []
        if sample is not None:
            for name in (topics.messages, topics.quarantine, topics.media):
                rate, series = sampler.rate(name)
                rows.append(
                    {
                        "topic": name,
                        "rate": rate,
                        "records": sample.count(name),
                        "chart": sparkline(series, f"{name} records a second"),
                    }
                )
            for worker in WORKERS:
                view = sampler.group(worker)
                if view is not None:
                    groups.append(
                        {"view": view, "chart": sparkline(view.lag_series, f"{view.group} lag")}
                    )
            for worker in WORKERS:
                dlq = topics.dlq(worker)
                newest = sampler.newest.get(dlq)
                letters.append(
                    {
                        "worker": worker,
                        "topic": dlq,
                        "depth": sample.count(dlq),
                        "redriven": sample.count(topics.redrive(worker)),
                        "reason": newest.reason if newest else None,
                        "at": iso(newest.at) if newest else None,
                    }
                )
        return self.render(
            request,
            "overview.html",
            sample=sample,
            sampled=iso(int(sample.at * 1000)) if sample else None,
            error=sampler.error,
            topics=rows,
            groups=groups,
            letters=letters,
            quarantined=sample.count(topics.quarantine) if sample else 0,
            rule=RULE,
            span=int(self.settings.span // 60),
            refresh=max(2, int(self.settings.sample_interval)),
        )

    # --- dead letters --------------------------------------------------------------------------

    def _filter(
        self, worker: str, reason: str, since: str, refs: Sequence[Ref] | None = None
    ) -> Filter:
        if worker and worker not in WORKERS:
            raise Refused(400, f"unknown worker {worker!r} (one of {', '.join(WORKERS)})")
        return Filter(
            worker or None,
            reason or None,
            _since(since),
            frozenset(refs) if refs is not None else None,
        )

    async def dead_letters(self, request: Request) -> Response:
        query = request.query_params
        worker, reason, since = (
            query.get("worker", ""),
            query.get("reason", ""),
            query.get("since", "24h"),
        )
        match = self._filter(worker, reason, since)
        queues = DeadLetterQueues(self.readers, self.settings.topics, self.codec)
        size = self.settings.page_size
        letters = [letter async for letter in queues.letters(match, size + 1)]
        return self.render(
            request,
            "deadletters.html",
            letters=[x.row() for x in letters[:size]],
            more=len(letters) > size,
            worker=worker,
            reason=reason,
            since=since,
            workers=WORKERS,
            scan=queues.scan.describe(),
        )

    async def dead_letter(self, request: Request) -> Response:
        ref = Ref.parse(request.path_params["ref"])
        queues = DeadLetterQueues(self.readers, self.settings.topics, self.codec)
        letter = await queues.show(ref)
        if letter is None:
            raise Refused(404, f"no dead letter at {ref}")
        push, problem = await decode_push(self.codec, letter.record.value)
        row = show_row(letter, push, problem)
        return self.render(request, "deadletter.html", letter=row, pushed=_json(push))

    async def redrive(self, request: Request) -> Response:
        fields = await form(request)
        visitor = self._may_act(request, fields)
        worker, reason, since = (
            _first(fields, "worker"),
            _first(fields, "reason"),
            _first(fields, "since") or "24h",
        )
        selected = _first(fields, "scope") == "selected"
        refs = [Ref.parse(text, "ref") for text in fields.get("ref", [])] if selected else None
        if selected and not refs:
            raise Refused(400, "no dead letter selected")
        workers = (
            sorted({r.worker for r in refs}) if refs else ([worker] if worker else list(WORKERS))
        )
        queues = DeadLetterQueues(self.readers, self.settings.topics, self.codec)
        confirmed = _first(fields, "confirm") == "yes"
        reports = []
        for each in workers:
            match = self._filter(
                each, reason, since, [r for r in refs if r.worker == each] if refs else None
            )
            reports.append(await queues.redrive(match, dry_run=not confirmed))
        what = (
            f"re-drive {', '.join(str(r) for r in refs)}"
            if refs
            else f"re-drive the dead letters of {worker or 'every worker'} "
            f"matching reason={reason!r} since={since!r}"
        )
        if confirmed:
            actions.info(
                "console: %s by %s: %s", what, visitor, "; ".join(r.summary() for r in reports)
            )
        return self.render(
            request,
            "redrive.html",
            confirmed=confirmed,
            reports=reports,
            what=what,
            fields=[
                (name, value)
                for name, values in fields.items()
                if name not in ("csrf", "confirm")
                for value in values
            ],
            back="/deadletters?" + urlencode({"worker": worker, "reason": reason, "since": since}),
        )

    def _may_act(self, request: Request, fields: dict[str, list[str]]) -> Visitor:
        if not self.settings.allow_actions:
            raise Refused(403, "actions are off: start the console with --allow-actions")
        visitor: Visitor | None = request.scope.get("state", {}).get("visitor")
        if visitor is None or not self.keys.csrf_matches(visitor, _first(fields, "csrf")):
            raise Refused(403, "the form's CSRF token is missing or wrong: reload the page")
        return visitor

    # --- quarantine ----------------------------------------------------------------------------

    async def quarantine(self, request: Request) -> Response:
        query = request.query_params
        reason, since = query.get("reason", ""), query.get("since", "24h")
        quarantine = Quarantine(self.readers, self.settings.topics)
        size = self.settings.page_size
        bodies = [b async for b in quarantine.bodies(reason or None, _since(since), size + 1)]
        return self.render(
            request,
            "quarantine.html",
            bodies=[b.row() for b in bodies[:size]],
            more=len(bodies) > size,
            reason=reason,
            since=since,
            scan=quarantine.scan.describe(),
        )

    async def quarantined(self, request: Request) -> Response:
        ref = QuarantineRef.parse(request.path_params["ref"])
        body = await Quarantine(self.readers, self.settings.topics).show(ref)
        if body is None:
            raise Refused(404, f"nothing quarantined at {ref}")
        return self.render(
            request, "quarantined.html", body=body.detail(), ingress=self.settings.ingress_url
        )

    async def repost(self, request: Request) -> Response:
        fields = await form(request)
        visitor = self._may_act(request, fields)
        ref = QuarantineRef.parse(request.path_params["ref"])
        quarantine = Quarantine(self.readers, self.settings.topics)
        body = await quarantine.show(ref)
        if body is None:
            raise Refused(404, f"nothing quarantined at {ref}")
        confirmed = _first(fields, "confirm") == "yes"
        answers = await quarantine.repost(
            [body], self.settings.ingress_url, self.settings.ingress_token, dry_run=not confirmed
        )
        if confirmed:
            actions.info(
                "console: repost %s to %s by %s: %s",
                ref,
                self.settings.ingress_url,
                visitor,
                answers[0].row(),
            )
        return self.render(
            request,
            "repost.html",
            confirmed=confirmed,
            ref=str(ref),
            answer=answers[0].row(),
            ingress=self.settings.ingress_url,
        )

    # --- trace and conversation ----------------------------------------------------------------

    async def trace(self, request: Request) -> Response:
        query = request.query_params
        message_id = query.get("messageId", "").strip()
        business, customer = query.get("business", "").strip(), query.get("customer", "").strip()
        window = query.get("window", "24h")
        if not message_id and business and customer:
            target = "/conversation?" + urlencode(
                {"business": business, "customer": customer, "since": window}
            )
            return RedirectResponse(target, status_code=303)
        found = None
        scan = ""
        if message_id:
            if bool(business) != bool(customer):
                raise Refused(400, "give both phones of the conversation, or neither")
            tracer = Tracer(self.readers, self.settings.topics, self.codec, self.groups)
            since = int(time.time() * 1000 - parse_duration(window, "window") * 1000)
            key = conversation_key(business, customer) if business else None
            traced = await tracer.trace(message_id, since, None, key, self.settings.router_outputs)
            found = traced.row()
            scan = tracer.scan.describe()
        return self.render(
            request,
            "trace.html",
            found=found,
            messageId=message_id,
            business=business,
            customer=customer,
            window=window,
            scan=scan,
        )

    async def conversation(self, request: Request) -> Response:
        query = request.query_params
        business, customer = query.get("business", "").strip(), query.get("customer", "").strip()
        since_text = query.get("since", "24h")
        if not business or not customer:
            raise Refused(400, "a conversation needs the business phone and the customer's")
        since = parse_time(since_text, "since")
        topics = self.settings.topics
        scan = Scan()
        async with self.readers.reader(scan) as reader:
            chat = await conversation(
                reader,
                self.codec,
                self.groups,
                topics,
                business,
                customer,
                since,
                self.settings.page_size,
                media=True,
                statuses=True,
            )
        media, ticks = chat.media, chat.statuses
        bubbles = [_bubble(line.row(), line.push, media) for line in chat.lines]
        bubbles += [
            {
                "out": True,
                "time": s["time"],
                "type": "status",
                "text": f"message {s['id']}",
                "status": s["status"],
                "tick": _TICKS.get(s["status"], s["status"]),
            }
            for s in ticks
        ]
        bubbles.sort(key=lambda b: str(b["time"]))
        return self.render(
            request,
            "conversation.html",
            bubbles=bubbles,
            business=business,
            customer=customer,
            since=since_text,
            shown=len(chat.lines),
            matched=chat.matched,
            scan=scan.describe(),
        )

    async def media_object(self, request: Request) -> Response:
        found = await self.media.get(request.path_params["digest"])
        if found is None:
            return PlainTextResponse("no such object in the media store", status_code=404)
        return StreamingResponse(
            found.chunks,
            media_type=found.content_type,
            headers={
                "content-length": str(found.size),
                "cache-control": "private, max-age=86400, immutable",
                # A stored SVG or HTML "image" must not run as a page of the console's origin.
                "content-security-policy": "sandbox; default-src 'none'",
            },
        )


_TICKS = {"sent": "✓", "delivered": "✓✓", "read": "✓✓ read", "failed": "failed"}
_MEDIA_KINDS = ("image", "sticker", "video", "audio", "document")


def _bubble(
    row: dict[str, Any], push: dict[str, Any] | None, media: dict[str, list[dict[str, Any]]]
) -> dict[str, Any]:
    message = (push or {}).get("message") or {}
    kind = row["type"]
    stored = media.get(str(row["messageId"]), [])
    bubble: dict[str, Any] = {
        "out": False,
        **row,
        "media_src": None,
        "media_type": None,
        "filename": None,
    }
    if stored:
        bubble["media_src"] = f"/media/{stored[0]['sha256']}"
        bubble["media_type"] = stored[0].get("mimeType")
    if kind in _MEDIA_KINDS:
        bubble["filename"] = (message.get(kind) or {}).get("filename")
    location = message.get("location")
    if location:
        bubble["text"] = ", ".join(
            str(location[k])
            for k in ("name", "address", "latitude", "longitude")
            if location.get(k)
        )
    contacts = message.get("contacts")
    if contacts:
        bubble["text"] = "; ".join(_contact(c) for c in contacts)
    return bubble


def _contact(contact: dict[str, Any]) -> str:
    name = (contact.get("name") or {}).get("formatted_name") or ""
    phones = ", ".join(str(p.get("phone")) for p in contact.get("phones") or () if p.get("phone"))
    return f"{name} {phones}".strip()


def _since(text: str) -> int | None:
    return None if text == "all" else parse_time(text, "since")


def _first(fields: dict[str, list[str]], name: str) -> str:
    values = fields.get(name)
    return values[0] if values else ""


def _local(target: str | None) -> str:
    """A path on this console to go to after the login (never another site)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _json(value: Any) -> str:
    if value is None or isinstance(value, str):
        return value or ""
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()
