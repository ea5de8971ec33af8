"""Rules: every message type of the spec and its quirks, through the real codec; invalid files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from consumers.router.rules import (
    VIEW,
    Drop,
    PostTo,
    Rules,
    RulesError,
    ToTopic,
    compile_rules,
    example_rules,
    load_rules,
)
from schemas import PushCodec
from schemas.meta import MetaWebhook, StatusCodec
from tests.conftest import EXAMPLES

CODEC = PushCodec()
ROUTER_VIEW = CODEC.viewer(VIEW)
ROOT = Path(__file__).parents[2]


def push(name: str, **changes: Any) -> dict[str, Any]:
    """An example push as the router sees it: parsed and encoded by the codec, then read
    through the rules' view (every condition is tested on only the fields ``VIEW`` reads)."""
    body = orjson.loads(EXAMPLES.joinpath(f"{name}.json").read_bytes())
    body.update(changes)
    return ROUTER_VIEW(CODEC.encode(CODEC.parse(orjson.dumps(body), 0)))


def rules(text: str, environ: dict[str, str] | None = None) -> Rules:
    import tomllib

    return compile_rules(tomllib.loads(text), environ or {}, source="rules.toml")


def only(condition: str) -> Rules:
    return rules(f'[[rule]]\nname = "r"\nmatch = {condition}\nactions = [{{ topic = "t" }}]')


def hits(condition: str, example: str, **changes: Any) -> bool:
    return only(condition).route(push(example, **changes)).matched == ("r",)


ALL_TYPES = sorted(path.stem for path in EXAMPLES.glob("*.json"))


def test_every_example_of_the_spec_is_covered() -> None:
    assert len(ALL_TYPES) == 13


@pytest.mark.parametrize("example", ALL_TYPES)
def test_message_type_matches_each_example_and_no_other(example: str) -> None:
    decoded = push(example)
    kind = decoded["message"]["type"]
    assert kind is not None, f"{example}: the codec found no type"
    matched = [other for other in ALL_TYPES if hits(f'{{ type = "{kind}" }}', other)]
    same = [other for other in ALL_TYPES if push(other)["message"]["type"] == kind]
    assert matched == same and example in matched


def test_unknown_example_with_top_level_type_is_matched_by_type() -> None:
    assert hits('{ type = "unknown" }', "unknown")
    assert not hits('{ type = "text" }', "unknown")


@pytest.mark.parametrize(
    ("example", "media"),
    [(name, name in {"image", "video", "audio", "document", "sticker"}) for name in ALL_TYPES],
)
def test_has_media(example: str, media: bool) -> None:
    assert hits("{ hasMedia = true }", example) is media
    assert hits("{ hasMedia = false }", example) is not media


def test_forwarded_quirk_string_true_and_trailing_space_key() -> None:
    # The spec sends "forwarded": "true" (a string) and "frequently_forwarded " (trailing space).
    assert hits("{ forwarded = true }", "forwarded")
    assert hits("{ forwarded = false }", "text")
    assert not hits("{ forwarded = true }", "context")  # a reply context, not forwarded


def test_text_regex_on_body_button_reply_and_list_reply() -> None:
    assert hits('{ text = "^prime" }', "text")
    assert not hits('{ text = "^time" }', "text")
    button = {
        "type": "interactive",
        "interactive": {"type": "button_reply", "button_reply": {"id": "yes-1", "title": "Yes"}},
    }
    listed = {
        "type": "interactive",
        "interactive": {
            "type": "list_reply",
            "list_reply": {"id": "sku-42", "title": "Red shoes", "description": "Size 9"},
        },
    }
    assert hits('{ text = "^Yes$" }', "interactive", message=button)
    assert hits('{ text = "^yes-" }', "interactive", message=button)  # the reply id too
    assert hits('{ text = "(?i)red" }', "interactive", message=listed)
    assert hits('{ text = "sku-\\\\d+" }', "interactive", message=listed)
    # The example's list is an outbound shape: its section rows are not a reply.
    assert not hits('{ text = "First Set" }', "interactive")
    assert not hits('{ text = "." }', "image")  # a caption is not a typed text


def test_ids_phones_and_event_type() -> None:
    assert hits('{ appId = "TaPGlXbZ" }', "text")
    assert hits('{ appId = ["x", "TaPGlXbZ"] }', "text")
    assert not hits('{ appId = "appId" }', "text")
    assert hits('{ businessPhone = "6395110022481" }', "text")
    assert hits('{ eventType = "up-message-event" }', "unknown")
    assert hits('{ fromPrefix = "9185" }', "text")
    assert hits('{ fromPrefix = ["44", "91"] }', "text")
    assert not hits('{ fromPrefix = "86" }', "text")


def test_phone_sent_as_a_number_is_matched_as_digits() -> None:
    # Quirk: a number where a string belongs is normalised by the codec, so prefixes still work.
    assert hits('{ fromPrefix = "9185" }', "text", **{"from": {"phone": 91856321412}})
    assert hits('{ businessPhone = "6395110022481" }', "text", businessPhone=6395110022481)


def test_missing_fields_never_match_and_never_raise() -> None:
    bare = CODEC.decode(CODEC.encode(CODEC.parse(b'{"messageId": "m"}', 0)))
    for condition in (
        '{ type = "text" }', '{ fromPrefix = "1" }', '{ text = "." }', "{ hasMedia = true }",
        "{ forwarded = true }", '{ appId = "a" }',
    ):  # fmt: skip
        assert only(condition).route(bare).matched == ()


def test_new_message_types_flow_through() -> None:
    reaction = {"type": "reaction", "reaction": {"emoji": "👍", "message_id": "x"}}
    assert hits('{ type = "reaction" }', "text", message=reaction)


def test_all_any_not() -> None:
    assert hits('{ all = [{ type = "text" }, { fromPrefix = "91" }] }', "text")
    assert not hits('{ all = [{ type = "text" }, { fromPrefix = "44" }] }', "text")
    assert hits('{ any = [{ type = "image" }, { fromPrefix = "91" }] }', "text")
    assert not hits('{ any = [{ type = "image" }, { fromPrefix = "44" }] }', "text")
    assert hits('{ not = { type = "image" } }', "text")
    assert hits('{ type = "image", not = { any = [{ fromPrefix = "44" }] } }', "image")


def test_order_continue_and_default() -> None:
    compiled = rules(
        """
        [default]
        topic = "unmatched"
        [[rule]]
        name = "copy"
        match = {}
        actions = [{ topic = "all" }]
        continue = true
        [[rule]]
        name = "texts"
        match = { type = "text" }
        actions = [{ topic = "texts" }]
        [[rule]]
        name = "never"
        match = { type = "text" }
        actions = [{ topic = "never" }]
        """
    )
    routing = compiled.route(push("text"))
    assert routing.matched == ("copy", "texts")
    assert routing.pairs == [("copy", ToTopic("all")), ("texts", ToTopic("texts"))]
    assert compiled.route(push("image")).matched == ("copy",)
    no_copy = rules(
        '[default]\ntopic = "unmatched"\n'
        '[[rule]]\nname = "t"\nmatch = { type = "text" }\nactions = [{ drop = true }]'
    )
    assert no_copy.route(push("image")).pairs == [("default", ToTopic("unmatched"))]
    assert no_copy.route(push("text")).dropped
    assert rules("").route(push("text")).pairs == [("default", Drop())]
    assert compiled.topics == {"unmatched", "all", "texts", "never"}


def test_endpoints_and_secrets_from_the_environment() -> None:
    compiled = rules(
        """
        [endpoint.crm]
        url = "https://crm.example.com/hook"
        secret_env = "CRM_SECRET"
        timeout = 2
        concurrency = 3
        [[rule]]
        name = "r"
        match = {}
        actions = [{ post = "crm" }]
        """,
        {"CRM_SECRET": "s3cret"},
    )
    endpoint = compiled.endpoints["crm"]
    assert (endpoint.timeout, endpoint.concurrency, endpoint.secret.reveal()) == (2.0, 3, "s3cret")
    assert "s3cret" not in repr(endpoint)
    assert compiled.route(push("text")).pairs == [("r", PostTo("crm"))]


RULE = '[[rule]]\nname = "{name}"\nmatch = {match}\nactions = {actions}\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (RULE.format(name="bad-re", match='{ text = "(" }', actions='[{ drop = true }]'),
         "rule 'bad-re': match.text: invalid regular expression '('"),
        (RULE.format(name="typo", match='{ tpye = "text" }', actions='[{ drop = true }]'),
         "rule 'typo': match: unknown condition 'tpye'"),
        (RULE.format(name="no-ep", match="{}", actions='[{ post = "crm" }]'),
         "rule 'no-ep': actions[0]: unknown endpoint 'crm'"),
        (RULE.format(name="empty", match="{}", actions="[]"),
         "rule 'empty': needs actions"),
        (RULE.format(name="two", match="{}", actions='[{ drop = true }, { topic = "t" }]'),
         "rule 'two': drop cannot be combined"),
        (RULE.format(name="topic", match="{}", actions='[{ topic = "a b" }]'),
         "rule 'topic': actions[0]: 'a b' is not a valid Kafka topic name"),
        (RULE.format(name="flag", match='{ hasMedia = "yes" }', actions='[{ drop = true }]'),
         "rule 'flag': match.hasMedia: must be true or false"),
        (RULE.format(name="nest", match='{ any = [{ fromPrefix = "+44" }] }',
                     actions='[{ drop = true }]'),
         "rule 'nest': match.any[0].fromPrefix: phone prefixes are digits only"),
        (RULE.format(name="dup", match="{}", actions='[{ drop = true }]') * 2,
         "rule 'dup': the name is used by an earlier rule"),
        ('[[rule]]\nmatch = {}\nactions = [{ drop = true }]\n',
         "rule #1: needs a name"),
        ('[[rule]]\nname = "x"\nactions = [{ drop = true }]\n',
         "rule 'x': needs a match table"),
        ('[endpoint.crm]\nurl = "https://x"\nsecret_env = "NOPE"\n',
         "endpoint 'crm': secret_env: environment variable 'NOPE' is not set"),
        ('[default]\ntopic = ""\n', "[default]: '' is not a valid Kafka topic name"),
        ("[[rule]]\nname = 'x'\nmatch = {}\nactions = [{ drop = true }]\ncontinu = true\n",
         "rule 'x': unknown key 'continu'"),
        ("[[rule]\n", "not valid TOML"),
    ],
)  # fmt: skip
def test_invalid_rules_file_is_refused_naming_the_rule_and_problem(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(text)
    with pytest.raises(RulesError) as caught:
        load_rules(path, {})
    assert message in str(caught.value)
    assert str(caught.value).startswith(str(path))


def test_router_refuses_to_start_with_an_invalid_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(RULE.format(name="bad-re", match='{ text = "[a-" }', actions="[]"))
    for argv in (["router", "--rules", str(path)], ["router", "check", str(path)]):
        done = subprocess.run(
            [sys.executable, "-m", "uplink.cli.main", *argv],
            capture_output=True,
            text=True,
            timeout=60,
            env={"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"},  # never reached: refused first
        )
        assert done.returncode == 78, done.stderr
        assert "rule 'bad-re'" in done.stderr and "needs actions" in done.stderr


def test_check_shows_which_rules_a_sample_push_hits() -> None:
    done = subprocess.run(
        [
            sys.executable, "-m", "uplink.cli.main", "router", "check",
            str(example_rules()),
            "--push", str(EXAMPLES / "image.json"),
            "--push", '{"messageId": "m", "message": {"type": "text", "text": {"body": "help!"}}}',
        ],
        capture_output=True, text=True, timeout=60, env={},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "6 rules" in lines[0] and lines[0].endswith("OK")
    assert "image.json: matched analytics, media" in lines[1]
    assert "matched analytics, support" in done.stdout
    assert "support -> http:support-desk" in done.stdout


def test_check_takes_a_meta_webhook_too() -> None:
    done = subprocess.run(
        [
            sys.executable, "-m", "uplink.cli.main", "router", "check", str(example_rules()),
            "--push", str(EXAMPLES / "meta" / "order.json"),
            "--push", str(EXAMPLES / "meta" / "several.json"),
        ],
        capture_output=True, text=True, timeout=60, env={},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "order.json: matched analytics, meta-orders, orders" in done.stdout
    assert "meta-orders -> topic:uplink.meta-orders.v1" in done.stdout
    assert done.stdout.count("several.json wamid.") == 3  # one line per message of the POST


def meta_push(name: str) -> dict[str, Any]:
    """Meta's example ``name`` mapped by the ingress (schemas/meta.py), through the view."""
    raw = EXAMPLES.joinpath("meta", f"{name}.json").read_bytes()
    [record] = MetaWebhook(CODEC, StatusCodec()).parse(raw, 0).messages
    return ROUTER_VIEW(CODEC.encode(record))


def test_source_tells_metas_webhook_from_the_providers_push() -> None:
    meta, uplink = meta_push("text"), push("text")
    assert (meta["source"], uplink["source"]) == ("meta", "uplink")
    from_meta, from_provider = only('{ source = "meta" }'), only('{ source = "uplink" }')
    assert from_meta.route(meta).matched == ("r",) and from_meta.route(uplink).matched == ()
    assert from_provider.route(uplink).matched == ("r",) and from_provider.route(meta).matched == ()
    both = only('{ source = ["meta", "uplink"] }')
    assert both.route(meta).matched == both.route(uplink).matched == ("r",)
    # A record written before push.avsc v2 has no source: the provider's.
    older = ROUTER_VIEW(CODEC.encode({**CODEC.parse(b'{"messageId": "m"}', 0), "source": None}))
    assert from_provider.route(older).matched == ("r",)


def test_every_condition_reads_metas_records_as_the_providers() -> None:
    assert hits_meta('{ type = "image", hasMedia = true }', "image")
    assert hits_meta('{ fromPrefix = "1650" }', "text")
    assert hits_meta('{ businessPhone = "15550783881" }', "text")
    assert hits_meta("{ forwarded = true }", "frequently_forwarded")
    assert hits_meta('{ text = "(?i)cancel" }', "interactive_button_reply")
    assert not hits_meta("{ hasMedia = true }", "reaction")


def hits_meta(condition: str, example: str) -> bool:
    return only(condition).route(meta_push(example)).matched == ("r",)


def test_an_unknown_source_is_a_rules_error() -> None:
    with pytest.raises(RulesError, match="unknown source 'whatsapp'"):
        only('{ source = "whatsapp" }')
