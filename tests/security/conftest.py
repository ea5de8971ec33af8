"""One secured broker for the module's tests (its start is most of their time)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers.secured import SecuredBroker

# The components' principals for the ACL tests: SCRAM users of their own.
COMPONENTS = ("ingress", "archive", "media", "router", "topics", "replay")


@pytest.fixture(scope="session")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredBroker]:
    with SecuredBroker(tmp_path_factory.mktemp("secured"), COMPONENTS) as broker:
        yield broker
