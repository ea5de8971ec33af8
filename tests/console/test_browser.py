"""The console in a real browser (headless chromium) on the real pipeline: a real broker, the
ingress and the three workers in this process, an HTTP endpoint and a media server on loopback.

Pushes go in through the ingress: a text, an image the media worker fetches, a text that is a
``<script>``, and one the endpoint refuses. Then, in the browser: the overview shows every
group caught up (lag 0) and the dead letter; its page shows the reason; a re-drive after the
endpoint is fixed delivers it once; the conversation shows the text, the image (loaded) and the
script as text. Without the token on a non-loopback bind every page answers 401.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import orjson
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.wait import WebDriverWait

from consumers.archive.settings import ArchiveSettings
from consumers.media.settings import MediaRetries, MediaSettings, MediaTimeouts
from consumers.router.rules import load_rules
from consumers.router.settings import RouterSettings
from ingress.app import create_app
from tests.conftest import EXAMPLES, Server, wait_ready
from tests.consumers.conftest import SettingsFactory
from tests.consumers.media.server import MediaServer
from tests.consumers.router.test_handler import SECRET, Receiver
from tests.uplink.operate.conftest import environ
from uplink.cli import launcher, workers
from uplink.cli.launcher import Assembly
from uplink.cli.main import console_settings
from uplink.console import ConsoleSettings, console_app
from uplink.exceptions import ConfigError
from uplink.settings import IngressSettings, Secret, WorkerSettings

pytestmark = pytest.mark.anyio

BUSINESS, CUSTOMER = "639518159038", "91856321412"
SCRIPT = "<script>document.title='owned'</script>"
HELLO = "Hello from the browser test"


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A real PNG of one colour, made here (no image library needed)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(tag + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def push(kind: str, message_id: str, **message: object) -> bytes:
    body = orjson.loads(EXAMPLES.joinpath(f"{kind}.json").read_bytes())
    body["messageId"] = message_id
    body["businessPhone"] = BUSINESS
    body["from"]["phone"] = CUSTOMER
    body["timestamp"] = int(time.time())
    for name, value in message.items():
        body["message"][name] = value
    return orjson.dumps(body)


@contextlib.asynccontextmanager
async def running(*assemblies: Assembly) -> AsyncIterator[None]:
    """The assemblies launched as their ``uplink`` verbs do, until the block ends."""
    readies = [asyncio.Event() for _ in assemblies]
    tasks = [
        asyncio.create_task(launcher.run(a, ready=r.set))
        for a, r in zip(assemblies, readies, strict=True)
    ]
    try:
        async with asyncio.timeout(90):
            for ready, task in zip(readies, tasks, strict=True):
                waiter = asyncio.create_task(ready.wait())
                await asyncio.wait([waiter, task], return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                if task.done():
                    task.result()  # it failed to start: raise why
        yield
    finally:
        for assembly in assemblies:
            assembly.request_stop()
        async with asyncio.timeout(60):
            await asyncio.gather(*tasks)


async def page(
    browser: webdriver.Chrome, url: str, ready: Callable[[], bool], timeout: float = 60
) -> None:
    """Load ``url`` until ``ready`` holds on it (the overview shows the console's latest
    sample: reloaded as a person would, as the console samples)."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                await asyncio.to_thread(browser.get, url)
                try:
                    if await asyncio.to_thread(ready):
                        return
                except WebDriverException as error:
                    if not replaced(error):
                        raise
                    # the page refreshed itself while being read: read it again
                await asyncio.sleep(0.5)  # the console's sample interval in this test
    except TimeoutError:
        shown = await asyncio.to_thread(lambda: browser.find_element(By.TAG_NAME, "main").text)
        raise AssertionError(
            f"{url} not as expected within {timeout} s; it shows:\n{shown}"
        ) from None


def cells(browser: webdriver.Chrome, css: str, attribute: str) -> dict[str, str]:
    return {
        str(row.get_attribute(attribute)): row.text
        for row in browser.find_elements(By.CSS_SELECTOR, css)
    }


def attributes(browser: webdriver.Chrome, css: str, key: str, value: str) -> dict[str, str]:
    return {
        str(row.get_attribute(key)): str(row.get_attribute(value))
        for row in browser.find_elements(By.CSS_SELECTOR, css)
    }


# Every call into the browser runs in a thread: the workers and servers of the test share its
# event loop, and a group member whose loop is held misses its heartbeats.


async def text(browser: webdriver.Chrome, css: str) -> str:
    return await asyncio.to_thread(lambda: browser.find_element(By.CSS_SELECTOR, css).text)


async def rows(browser: webdriver.Chrome, css: str, attribute: str) -> dict[str, str]:
    return await asyncio.to_thread(cells, browser, css, attribute)


def replaced(error: WebDriverException) -> bool:
    """Whether ``error``, asked about a node, means its page has been replaced.

    chromedriver says "stale" or, while the new document is being attached, that the node
    "does not belong to the document".
    """
    return isinstance(error, StaleElementReferenceException) or (
        "does not belong to the document" in str(error.msg)
    )


def gone(element: WebElement) -> Callable[[webdriver.Chrome], bool]:
    def check(_: webdriver.Chrome) -> bool:
        try:
            element.is_enabled()
        except WebDriverException as error:
            if replaced(error):
                return True
            raise
        return False

    return check


async def submit(browser: webdriver.Chrome, button: str, title: str) -> None:
    """Click a form's ``button`` and wait for the page it leads to (titled ``title``...)."""

    def arrived() -> None:
        old = browser.find_element(By.TAG_NAME, "html")
        browser.find_element(By.CSS_SELECTOR, button).click()
        WebDriverWait(browser, 60).until(gone(old))
        WebDriverWait(browser, 60).until(lambda driver: driver.title.startswith(title))

    await asyncio.to_thread(arrived)


async def shoot(browser: webdriver.Chrome, where: Path, name: str) -> None:
    assert await asyncio.to_thread(browser.save_screenshot, str(where / f"{name}.png"))


async def test_the_console_on_the_real_pipeline(
    browser: webdriver.Chrome,
    artifacts: Path,
    make_worker_settings: SettingsFactory,
    serve: Server,
    tmp_path: Path,
) -> None:
    router = make_worker_settings("router", commit_interval=0.2)
    media = make_worker_settings("media", commit_interval=0.2)
    archive = make_worker_settings("archive", commit_interval=0.2)
    topics = router.topics
    # The router's HTTP output refuses (400, a bug on its side) the push "refused-1".
    endpoint = Receiver(status=400, broken={"refused-1"})
    copies = topics.messages + ".all"  # the rule's output topic, which the trace shows
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text(
        f"""
        [endpoint.crm]
        url = "{await serve(endpoint.app())}/hook"
        secret = "{SECRET}"
        [[rule]]
        name = "all"
        match = {{}}
        actions = [{{ topic = "{copies}" }}, {{ post = "crm" }}]
        """
    )
    rules = load_rules(rules_file, {})
    files = MediaServer()
    image = png(48, 32, (40, 140, 220))
    sha = files.add("photo.png", image)
    media_base = await serve(files.app())
    store = tmp_path / "media"
    media_settings = MediaSettings(
        root=store,
        allow_hosts=frozenset({"127.0.0.1"}),
        timeouts=MediaTimeouts(connect=2, read=2, attempt=20),
        retries=MediaRetries(attempts=2, backoff=0.01, backoff_max=0.05),
    )
    ingress = await serve(create_app(IngressSettings(kafka=router.kafka, topics=topics)))
    delays = RouterSettings(delays=(0.2, 0.5), delay_pattern=topics.messages + ".d{step}")
    assemblies = [
        workers.router(router, delays, rules),
        workers.media(media, media_settings),
        workers.archive(archive, ArchiveSettings(root=tmp_path / "archive")),
    ]
    groups = {"router": router.group, "media": media.group, "archive": archive.group}
    # Its settings as `uplink console` reads them, the router's rules among them.
    settings = console_settings(
        ["--allow-actions", *(f"--group={w}={g}" for w, g in groups.items())],
        {
            **environ(router),
            "UPLINK_CONSOLE_SAMPLE_INTERVAL": "0.5",
            "UPLINK_MEDIA_DIR": str(store),
            "UPLINK_ROUTER_RULES": str(rules_file),
            "UPLINK_TOPIC_ROUTER_DELAY": delays.delay_pattern,
            "UPLINK_ROUTER_DELAYS": "0.2,0.5",
        },
    )
    assert copies in settings.router_outputs
    console = await serve(console_app(settings))

    async with running(*assemblies), httpx.AsyncClient(trust_env=False) as client:
        await wait_ready(client, ingress)
        image_message = {
            "type": "image",
            "image": {
                "id": "1517236555680319",
                "mimeType": "image/png",
                "filePath": f"{media_base}/files/photo.png",
                "sha256": sha,
                "caption": "the blue photo",
            },
        }
        pushes = [
            push("text", "hello-1", text={"body": HELLO}),
            push("image", "image-1", **image_message),
            push("text", "script-1", text={"body": SCRIPT}),
            push("text", "refused-1", text={"body": "refused by the endpoint"}),
        ]
        for body in pushes:
            answer = await client.post(
                f"{ingress}/v1/uplink", content=body, headers={"content-type": "application/json"}
            )
            assert answer.status_code == 200, answer.text
        await endpoint.wait_for(lambda: sum(endpoint.accepted.values()) == 3)

        # The overview: every group caught up, the router's dead letter counted with its reason.
        def caught_up() -> bool:
            lags = attributes(browser, "#groups tr[data-group]", "data-group", "data-lag")
            depths = attributes(browser, "#dlqs tr[data-worker]", "data-worker", "data-depth")
            return lags == {g: "0" for g in groups.values()} and depths.get("router") == "1"

        await page(browser, console + "/", caught_up)
        states = await asyncio.to_thread(
            attributes, browser, "#groups tr[data-group]", "data-group", "data-state"
        )
        assert set(states.values()) == {"green"}
        assert "HTTP 400" in (await rows(browser, "#dlqs tr[data-worker]", "data-worker"))["router"]
        assert topics.messages in await text(browser, "#topics")
        await shoot(browser, artifacts, "overview")

        # The dead letters: the refused push, with its reason.
        await asyncio.to_thread(browser.get, console + "/deadletters?worker=router&since=1h")
        letters = await rows(browser, "#letters tr[data-ref]", "data-ref")
        assert len(letters) == 1
        [(ref, row)] = letters.items()
        assert "HTTP 400" in await text(browser, "#letters tr[data-ref] .reason")
        assert "refused-1" in row
        await shoot(browser, artifacts, "deadletters")

        await asyncio.to_thread(browser.get, f"{console}/deadletters/{ref}")
        assert await text(browser, "#letter .key") == f"{BUSINESS}:{CUSTOMER}"
        assert '"messageId": "refused-1"' in await text(browser, "#push")
        assert "uplink-dlq-reason" in await text(browser, "#headers")
        await shoot(browser, artifacts, "deadletter")

        # Fixed: re-drive the selection; the count first (a dry run), then the confirmation.
        endpoint.broken.clear()
        await asyncio.to_thread(browser.get, console + "/deadletters?worker=router&since=1h")
        await asyncio.to_thread(
            lambda: browser.find_element(By.CSS_SELECTOR, f"tr[data-ref='{ref}'] input").click()
        )
        await submit(browser, "#redrive-selected", "Re-drive")
        assert await text(browser, "#reports .count") == "1"
        assert endpoint.tries["refused-1"] == 1  # a dry run sends nothing
        await shoot(browser, artifacts, "redrive-confirm")
        await submit(browser, "#confirm", "Re-drive")
        assert await text(browser, "h1") == "Re-driven"
        assert await text(browser, "#reports .count") == "1"
        await endpoint.wait_for(lambda: endpoint.accepted["refused-1"] == 1)

        def redriven() -> bool:
            counts = attributes(browser, "#dlqs tr[data-worker]", "data-worker", "data-redriven")
            return counts.get("router") == "1"

        await page(browser, console + "/", redriven)

        # The conversation: the texts, the image loaded from the media store, the script as text.
        url = f"{console}/conversation?business={BUSINESS}&customer={CUSTOMER}&since=1h"

        def drawn() -> bool:
            return bool(browser.find_elements(By.CSS_SELECTOR, "[data-message-id='image-1'] img"))

        await page(browser, url, drawn)
        bubbles = await rows(browser, ".bubble", "data-message-id")
        assert HELLO in bubbles["hello-1"]
        assert "the blue photo" in bubbles["image-1"]
        assert SCRIPT in bubbles["script-1"]  # shown as the text it is
        assert await asyncio.to_thread(lambda: browser.title) != "owned"
        assert not await asyncio.to_thread(browser.find_elements, By.CSS_SELECTOR, ".bubble script")
        width = await asyncio.to_thread(
            browser.execute_script,
            "const img = document.querySelector(\"[data-message-id='image-1'] img\");"
            "return img.complete ? img.naturalWidth : -1;",
        )
        assert width == 48
        await shoot(browser, artifacts, "conversation")

        source = await asyncio.to_thread(
            lambda: browser.find_element(
                By.CSS_SELECTOR, "[data-message-id='image-1'] img"
            ).get_attribute("src")
        )
        served = await client.get(str(source))
        assert served.headers["content-type"] == "image/png" and served.content == image

        await asyncio.to_thread(browser.get, f"{console}/trace?messageId=image-1&window=1h")
        assert "processed" in await text(browser, "table.groups")
        assert f"router: {copies}[" in await text(browser, "main")  # where it was routed
        await shoot(browser, artifacts, "trace")

    assert endpoint.accepted == Counter({"hello-1": 1, "image-1": 1, "script-1": 1, "refused-1": 1})
    assert endpoint.tries["refused-1"] == 2
    assert files.count("/files/photo.png") == Counter({"/files/photo.png": 1})


async def test_without_the_token_every_page_answers_401_on_another_address(
    browser: webdriver.Chrome,
    artifacts: Path,
    kafka_bootstrap: str,
    make_worker_settings: SettingsFactory,
    serve: Server,
) -> None:
    settings: WorkerSettings = make_worker_settings("router")
    with pytest.raises(ConfigError, match="UPLINK_CONSOLE_TOKEN"):
        ConsoleSettings(kafka=settings.kafka, topics=settings.topics, host="0.0.0.0")
    # Built for an address other than loopback; served on loopback by the test.
    console = await serve(
        console_app(
            ConsoleSettings(
                kafka=settings.kafka,
                topics=settings.topics,
                host="0.0.0.0",
                token=Secret("open sesame"),
                allow_actions=True,
            )
        )
    )
    pages = [
        "/",
        "/deadletters",
        "/deadletters/router:0:0",
        "/quarantine",
        "/quarantine/quarantine:0:0",
        "/trace?messageId=x",
        f"/conversation?business={BUSINESS}&customer={CUSTOMER}",
        "/media/" + "0" * 64,
    ]
    async with httpx.AsyncClient(base_url=console, trust_env=False) as client:
        for path in pages:
            answer = await client.get(path)
            assert answer.status_code == 401, path
            assert "Sign in" in answer.text
        assert (await client.post("/deadletters/redrive", data={"scope": "all"})).status_code == 401
        wrong = await client.get("/", headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401
        right = await client.get("/", headers={"authorization": "Bearer open sesame"})
        assert right.status_code == 200 and "Overview" in right.text
        # An action without the form's CSRF token is refused, the token notwithstanding.
        forged = await client.post(
            "/deadletters/redrive",
            data={"scope": "all", "confirm": "yes"},
            headers={"authorization": "Bearer open sesame"},
        )
        assert forged.status_code == 403 and "CSRF" in forged.text
        # The quarantine topic does not exist here: the page says so.
        missing = await client.get("/quarantine", headers={"authorization": "Bearer open sesame"})
        assert missing.status_code == 503 and "does not exist" in missing.text

    await asyncio.to_thread(browser.delete_all_cookies)
    await asyncio.to_thread(browser.get, console + "/deadletters")
    assert (await asyncio.to_thread(lambda: browser.title)).startswith("Sign in")
    await shoot(browser, artifacts, "login")
    await asyncio.to_thread(lambda: browser.find_element(By.NAME, "token").send_keys("open sesame"))
    await submit(browser, "form button", "Dead letters")
    [cookie] = await asyncio.to_thread(browser.get_cookies)
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert "open sesame" not in cookie["value"]
