"""Transport URLs, settings, the oslo v2 envelope and publishing (no broker needed)."""

from __future__ import annotations

import datetime
import json
import uuid
from pathlib import Path

import kombu
import pytest

from astara_actors.bus import (
    BusError,
    BusSettings,
    BusUnavailable,
    connect,
    embedded_url,
    notification_envelope,
    publish,
)
from astara_actors.bus.consumer import (
    dead_letter_queue,
    notifications_exchange,
    notifications_queue,
)
from astara_actors.bus.transport import FilesystemTransport, mask_url
from astara_actors.errors import AstaraError, SettingsError


def test_settings_default_to_neutrons_exchange_and_our_own_per_host_queue() -> None:
    settings = BusSettings(transport_url="memory://", host="net1")

    assert settings.notifications_exchange == "neutron"
    assert settings.notifications_routing_key == "notifications.info"
    assert settings.queue_name == "astara.notifications.net1"
    assert settings.control_exchange == "astara.control"
    assert (settings.prefetch_count, settings.heartbeat) == (100, 10.0)


def test_our_queue_survives_restarts_expires_without_consumer_and_is_bounded() -> None:
    settings = BusSettings(transport_url="memory://", host="net1")

    queue = notifications_queue(settings)

    assert queue.durable is True and queue.auto_delete is False
    assert queue.queue_arguments == {
        "x-queue-type": "quorum",
        "x-expires": 3_600_000,  # an hour without any consumer: the broker deletes it
        "x-max-length": 50_000,
        "x-overflow": "drop-head",  # never refuse Neutron's publish: drop (dead-letter) the oldest
        "x-dead-letter-exchange": "astara.dead",
    }
    dead = dead_letter_queue(settings)
    assert dead is not None
    assert (dead.name, dead.exchange.name, dead.exchange.type) == (
        "astara.dead",
        "astara.dead",
        "fanout",
    )
    assert dead.durable and dead.queue_arguments == {
        "x-max-length": 10_000,
        "x-overflow": "drop-head",
    }


def test_a_classic_unbounded_queue_without_dead_letters_can_be_chosen() -> None:
    settings = BusSettings(
        transport_url="memory://",
        host="h",
        queue_type="classic",
        queue_durable=False,
        queue_expiry=0,
        queue_max_length=0,
        dead_letter_exchange="",
    )

    queue = notifications_queue(settings)

    assert queue.durable is False
    assert not queue.queue_arguments
    assert dead_letter_queue(settings) is None


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("queue_type", "stream", "'stream' is not one of quorum, classic"),
        ("queue_expiry", -1.0, "must not be negative"),
        ("queue_max_length", -5, "must not be negative"),
    ],
)
def test_bad_queue_settings_are_refused_naming_the_key(
    key: str, value: object, problem: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        BusSettings(transport_url="memory://", **{key: value})

    assert str(caught.value) == f"[bus] {key}: {problem}"


def test_embedded_settings_put_the_bus_under_the_state_dir(tmp_path: Path) -> None:
    settings = BusSettings.embedded(tmp_path, host="h")

    assert settings.transport_url == f"filesystem://{tmp_path.resolve()}/bus"
    assert embedded_url(tmp_path) == settings.transport_url


@pytest.mark.parametrize("scheme", ["rabbit", "amqp"])
def test_rabbit_and_amqp_urls_go_to_py_amqp(scheme: str) -> None:
    conn = connect(BusSettings(transport_url=f"{scheme}://u:pw@mq.example:5673/astara"))

    assert conn.transport_cls == "pyamqp"
    assert (conn.hostname, conn.port, conn.userid, conn.virtual_host) == (
        "mq.example",
        5673,
        "u",
        "astara",
    )
    assert conn.heartbeat == 10.0
    assert conn.transport_options["confirm_publish"] is True


def test_oslo_failover_hosts_become_kombu_alternates() -> None:
    conn = connect(BusSettings(transport_url="rabbit://u:p@mq1:5672,u:p@mq2:5672/"))

    assert conn.hostname == "mq1"
    assert [alt.split("@")[1] for alt in conn.alt] == ["mq1:5672/", "mq2:5672/"]


def test_filesystem_url_maps_onto_one_shared_data_folder_and_a_control_folder(
    tmp_path: Path,
) -> None:
    conn = connect(BusSettings(transport_url=f"filesystem://{tmp_path}/bus", polling_interval=0.02))

    options = conn.transport_options
    assert conn.clone().transport_cls is FilesystemTransport
    assert options["data_folder_in"] == options["data_folder_out"] == str(tmp_path / "bus/data")
    assert options["control_folder"] == str(tmp_path / "bus/control")
    assert options["polling_interval"] == 0.02
    assert (tmp_path / "bus/data").is_dir() and (tmp_path / "bus/control").is_dir()


def test_a_relative_filesystem_path_is_refused() -> None:
    with pytest.raises(BusError, match="absolute path"):
        connect(BusSettings(transport_url="filesystem://var/bus"))


def test_an_unknown_scheme_names_the_url_without_its_password() -> None:
    with pytest.raises(BusError) as caught:
        connect(BusSettings(transport_url="kafka://admin:s3cret@kafka:9092/"))

    assert isinstance(caught.value, AstaraError)
    assert "kafka://admin:***@kafka:9092/" in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_mask_url_hides_every_failover_password() -> None:
    assert mask_url("rabbit://a:x@h1,b:y@h2/v") == "rabbit://a:***@h1,b:***@h2/v"
    assert mask_url("filesystem:///tmp/bus") == "filesystem:///tmp/bus"


def test_envelope_is_oslo_messaging_v2_with_the_message_json_encoded_twice() -> None:
    ids = iter([uuid.UUID(int=1), uuid.UUID(int=2)])
    when = datetime.datetime(2026, 11, 25, 3, 20, 9, 790889, tzinfo=datetime.UTC)

    body = notification_envelope(
        "astara.command",
        {"command": "poll"},
        publisher_id="astara.ctl.h",
        context={"project_id": "p1"},
        new_id=lambda: next(ids),
        now=lambda: when,
    )

    outer = json.loads(body)
    assert set(outer) == {"oslo.version", "oslo.message"}
    assert outer["oslo.version"] == "2.0"
    assert json.loads(outer["oslo.message"]) == {
        "message_id": str(uuid.UUID(int=1)),
        "publisher_id": "astara.ctl.h",
        "event_type": "astara.command",
        "priority": "INFO",
        "payload": {"command": "poll"},
        "timestamp": "2026-11-25 03:20:09.790889",
        "_unique_id": uuid.UUID(int=2).hex,
        "_context_project_id": "p1",
    }


@pytest.mark.usefixtures("memory_bus")
def test_publish_delivers_json_to_a_queue_bound_to_the_topic_exchange() -> None:
    settings = BusSettings(transport_url="memory://", host="h")
    conn = connect(settings)
    notifications_queue(settings).bind(conn.default_channel).declare()
    body = notification_envelope("router.create.end", {"router": {}}, publisher_id="network.h")

    publish(conn, body, exchange=notifications_exchange(settings), routing_key="notifications.info")

    message = conn.SimpleQueue(settings.queue_name).get(timeout=2)
    assert message.body == body.encode()
    assert message.content_type == "application/json"
    conn.release()


def test_filesystem_publisher_declares_the_topic_exchange_so_nothing_vanishes(
    tmp_path: Path,
) -> None:
    # Given a consumer's connection that bound our queue (as another process would)
    settings = BusSettings(transport_url=f"filesystem://{tmp_path}", host="h")
    consumer_conn = connect(settings)
    notifications_queue(settings).bind(consumer_conn.default_channel).declare()
    # When a fresh connection, which never heard of the exchange, publishes with the helper
    with connect(settings) as publisher_conn:
        publish(
            publisher_conn,
            '{"n": 1}',
            exchange=notifications_exchange(settings),
            routing_key="notifications.info",
        )
    # Then the topic message reaches the queue
    message = consumer_conn.SimpleQueue(notifications_queue(settings)).get(timeout=2)
    assert json.loads(message.body) == {"n": 1}
    consumer_conn.release()


def test_publishing_to_an_unreachable_broker_raises_bus_unavailable_without_the_password() -> None:
    conn = connect(BusSettings(transport_url="amqp://guest:s3cret@127.0.0.1:1//"))

    with pytest.raises(BusUnavailable) as caught:
        publish(conn, "{}", exchange=kombu.Exchange("x", "topic"), routing_key="k", max_retries=0)

    assert "127.0.0.1:1" in str(caught.value)
    assert "s3cret" not in str(caught.value)
    assert caught.value.__cause__ is None
