"""Settings are read at the edge; a bad value stops start-up naming the setting."""

from __future__ import annotations

import pytest

from consumers.router.settings import RouterSettings
from uplink.cli.main import main
from uplink.exceptions import ConfigError
from uplink.settings import IngressSettings, Secret, WorkerSettings


def test_defaults_follow_the_contract() -> None:
    settings = IngressSettings.from_env({})
    assert settings.topics.messages == "uplink.messages.v1"
    assert settings.topics.quarantine == "uplink.quarantine.v1"
    assert settings.topics.media == "uplink.media.v1"
    assert settings.topics.dlq("archive") == "uplink.archive.dlq.v1"
    assert settings.topics.messages_partitions == 12
    assert settings.max_body_bytes == 1024 * 1024
    assert settings.produce_timeout == 5.0
    assert settings.token is None


def test_environment_is_read_and_explicit_values_win() -> None:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": "k1:9092,k2:9092",
        "UPLINK_TOKEN": "t0ken",
        "UPLINK_PRODUCE_TIMEOUT": "2.5",
        "UPLINK_MAX_IN_FLIGHT": "10",
        "UPLINK_MESSAGES_PARTITIONS": "24",
        "UPLINK_CREATE_TOPICS": "false",
    }
    settings = IngressSettings.from_env(env, max_in_flight=99)
    assert settings.kafka.bootstrap_servers == "k1:9092,k2:9092"
    assert settings.token == Secret("t0ken")
    assert settings.produce_timeout == 2.5
    assert settings.max_in_flight == 99
    assert settings.topics.messages_partitions == 24
    assert settings.create_topics is False


def test_secrets_do_not_show_in_reprs() -> None:
    settings = IngressSettings.from_env({"UPLINK_TOKEN": "t0ken"})
    assert "t0ken" not in repr(settings)


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"UPLINK_PRODUCE_TIMEOUT": "soon"}, "UPLINK_PRODUCE_TIMEOUT"),
        ({"UPLINK_PRODUCE_TIMEOUT": "0"}, "UPLINK_PRODUCE_TIMEOUT"),
        ({"UPLINK_MAX_IN_FLIGHT": "-1"}, "UPLINK_MAX_IN_FLIGHT"),
        ({"KAFKA_BOOTSTRAP_SERVERS": "no-port"}, "KAFKA_BOOTSTRAP_SERVERS"),
        ({"UPLINK_CREATE_TOPICS": "maybe"}, "UPLINK_CREATE_TOPICS"),
        ({"UPLINK_KAFKA_SECURITY_PROTOCOL": "tls"}, "UPLINK_KAFKA_SECURITY_PROTOCOL"),
        ({"UPLINK_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "UPLINK_KAFKA_SASL_MECHANISM"),
        ({"UPLINK_MAX_BODY_BYTES": str(64 * 1024 * 1024)}, "UPLINK_MAX_BODY_BYTES"),
    ],
)
def test_bad_values_name_the_setting(env: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigError) as caught:
        IngressSettings.from_env(env)
    assert caught.value.setting == setting
    assert setting in str(caught.value)


def test_cli_stops_with_the_setting_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("UPLINK_MAX_IN_FLIGHT", "lots")
    assert main(["ingress", "--port", "1"]) == 78
    assert "UPLINK_MAX_IN_FLIGHT" in capsys.readouterr().err


def test_worker_settings_name_their_group_and_dlq_and_read_the_window_in_seconds() -> None:
    settings = WorkerSettings.from_env("archive", {"UPLINK_DEDUPE_WINDOW": "1800"})
    assert settings.group == "uplink-archive"
    assert settings.dlq == "uplink.archive.dlq.v1"
    assert settings.dedupe_window_ms == 1_800_000
    assert WorkerSettings.from_env("media", {}).dedupe_window_ms == 3_600_000
    with pytest.raises(ConfigError) as caught:
        WorkerSettings.from_env("media", {"UPLINK_COMMIT_EVERY": "0"})
    assert caught.value.setting == "UPLINK_COMMIT_EVERY"


def test_router_settings_from_env_and_errors_naming_the_variable() -> None:
    settings = RouterSettings.from_env(
        {
            "UPLINK_ROUTER_DELAYS": "0.2, 0.5,1",
            "UPLINK_TOPIC_ROUTER_DELAY": "x.delay.{step}",
            "UPLINK_ROUTER_FLUSH_GRACE": "0",
        }
    )
    assert settings.delays == (0.2, 0.5, 1.0)
    assert settings.delay_topics == ["x.delay.1", "x.delay.2", "x.delay.3"]
    assert settings.flush_grace == 0
    for environ, variable in (
        ({"UPLINK_ROUTER_DELAYS": "1m"}, "UPLINK_ROUTER_DELAYS"),
        ({"UPLINK_ROUTER_DELAYS": ","}, "UPLINK_ROUTER_DELAYS"),
        ({"UPLINK_TOPIC_ROUTER_DELAY": "no-step"}, "UPLINK_TOPIC_ROUTER_DELAY"),
        ({"UPLINK_ROUTER_FLUSH_GRACE": "-1"}, "UPLINK_ROUTER_FLUSH_GRACE"),
    ):
        with pytest.raises(ConfigError) as caught:
            RouterSettings.from_env(environ)
        assert caught.value.setting == variable


def test_meta_is_off_by_default_and_read_with_its_rotating_secrets() -> None:
    assert IngressSettings.from_env({}).meta.webhook is False
    settings = IngressSettings.from_env(
        {
            "UPLINK_META_VERIFY_TOKEN": "hub-token",
            "UPLINK_META_APP_SECRET": "new-secret, old-secret",
            "UPLINK_META_ACCESS_TOKEN": "EAAG-graph-token",
            "UPLINK_META_GRAPH_URL": "http://127.0.0.1:9999",
            "UPLINK_META_GRAPH_VERSION": "v21.0",
        }
    )
    meta = settings.meta
    assert meta.webhook is True
    assert meta.app_secrets == (Secret("new-secret"), Secret("old-secret"))
    assert (meta.graph_url, meta.graph_version) == ("http://127.0.0.1:9999", "v21.0")
    shown = repr(settings) + str(settings)
    for secret in ("hub-token", "new-secret", "old-secret", "EAAG-graph-token"):
        assert secret not in shown


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"UPLINK_META_VERIFY_TOKEN": "t"}, "UPLINK_META_APP_SECRET"),
        ({"UPLINK_META_APP_SECRET": "s"}, "UPLINK_META_VERIFY_TOKEN"),
        (
            {"UPLINK_META_APP_SECRET": " , ", "UPLINK_META_VERIFY_TOKEN": "t"},
            "UPLINK_META_APP_SECRET",
        ),
        ({"UPLINK_META_GRAPH_URL": "graph.facebook.com"}, "UPLINK_META_GRAPH_URL"),
        ({"UPLINK_META_GRAPH_VERSION": "v1/x"}, "UPLINK_META_GRAPH_VERSION"),
    ],
)
def test_a_half_configured_meta_stops_start_up_naming_the_setting(
    env: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        IngressSettings.from_env(env)
    assert raised.value.setting == named


def test_a_workers_commit_policy_yields_to_the_environment_which_yields_to_a_flag() -> None:
    from consumers.archive.settings import COMMITS

    policy = WorkerSettings.from_env("archive", {}, COMMITS)
    assert (policy.commit_every, policy.commit_interval) == (None, 60.0)
    environ = {"UPLINK_COMMIT_INTERVAL": "7", "UPLINK_COMMIT_EVERY": "10"}
    configured = WorkerSettings.from_env("archive", environ, COMMITS)
    assert (configured.commit_every, configured.commit_interval) == (10, 7.0)
    flagged = WorkerSettings.from_env("archive", environ, COMMITS, commit_interval=9.0)
    assert flagged.commit_interval == 9.0
    with pytest.raises(ConfigError) as caught:  # explicit values are checked as the variable's
        WorkerSettings.from_env("archive", {}, COMMITS, commit_interval=0.0)
    assert caught.value.setting == "UPLINK_COMMIT_INTERVAL"
