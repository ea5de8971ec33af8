"""The ACLs each component needs (docs/security.md, "ACLs"), for topic names under ``root``
(``uplink`` in a deployment; a test's own namespace here)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable

from tests.servers.secured import Acl, SecuredBroker

WORKERS = ("archive", "media", "router")


def topic_env(root: str) -> dict[str, str]:
    """uplink's default topic names with ``root`` for ``uplink``."""
    return {
        "UPLINK_TOPIC_MESSAGES": f"{root}.messages.v1",
        "UPLINK_TOPIC_QUARANTINE": f"{root}.quarantine.v1",
        "UPLINK_TOPIC_MEDIA": f"{root}.media.v1",
        "UPLINK_TOPIC_STATUSES": f"{root}.statuses.v1",
        "UPLINK_TOPIC_META_EVENTS": f"{root}.meta.events.v1",
        "UPLINK_TOPIC_DLQ": f"{root}.{{worker}}.dlq.v1",
        "UPLINK_TOPIC_REDRIVE": f"{root}.{{worker}}.redrive.v1",
        "UPLINK_TOPIC_ROUTER_DELAY": f"{root}.router.delay.{{step}}.v1",
        "UPLINK_MESSAGES_PARTITIONS": "2",
        "UPLINK_TOPIC_PARTITIONS": "1",
    }


def needed(root: str, outputs: Iterable[str], groups: str = "uplink") -> dict[str, list[Acl]]:
    """Each principal's ACLs: ``outputs`` are the router rules' topics."""
    messages = f"{root}.messages.v1"
    acls: dict[str, list[Acl]] = {
        "topics": [
            Acl("topics", "create", "topic", f"{root}.", "prefixed"),
            Acl("topics", "describe", "topic", f"{root}.", "prefixed"),
        ],
        "ingress": [
            Acl("ingress", "write", "topic", f"{root}.{name}.v1")
            for name in ("messages", "quarantine", "statuses", "meta.events")
        ],
        "replay": [Acl("replay", "write", "topic", messages)],
    }
    for worker in WORKERS:
        acls[worker] = [
            Acl(worker, "read", "topic", messages),
            *(
                Acl(worker, operation, "topic", f"{root}.{worker}.", "prefixed")
                for operation in ("read", "write", "create")
            ),
            Acl(worker, "read", "group", f"{groups}-{worker}", "prefixed"),
            # Each worker checks uplink's topics exist before it starts (it creates its own).
            Acl(worker, "describe", "topic", f"{root}.", "prefixed"),
        ]
    acls["router"] += [
        *(
            Acl("router", operation, "topic", output)
            for output in sorted(set(outputs))
            if not output.startswith(f"{root}.router.")
            for operation in ("write", "create")
        ),
        Acl("router", "write", "transactional-id", f"{groups}-router", "prefixed"),
    ]
    return acls


@contextlib.asynccontextmanager
async def granted(secured: SecuredBroker, acls: Iterable[Acl]) -> AsyncIterator[list[Acl]]:
    """``acls`` granted for the block, revoked after it: the broker is the session's, and a
    grant left behind (a group prefix, say) would be another test's."""
    given = list(acls)
    await secured.grant(given)
    try:
        yield given
    finally:
        await secured.revoke(given)
