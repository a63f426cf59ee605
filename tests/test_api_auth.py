"""Secure by default: what the API refuses to serve, and Keystone authentication (against the
simulated Keystone over real HTTP: ``GET /v3/auth/tokens`` as the [cloud] account)."""

from __future__ import annotations

import configparser
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import falcon.testing
import pytest

from astara_actors.api import create_app, openapi_document
from astara_actors.api.errors import KeystoneUnavailable
from astara_actors.api.keystone import (
    KeystoneIdentity,
    KeystoneTokens,
    KeystoneValidator,
    identity_of,
    keystone_account,
)
from astara_actors.api.server import check_api_settings, main, run_api
from astara_actors.config.cloud import CloudSettings
from astara_actors.config.loader import ApiSettings, load_config
from astara_actors.errors import SettingsError
from astara_actors.testing import FakeClock, free_port
from astara_actors.testing.api import FakeControl
from astara_actors.testing.sim import PASSWORD, SimCloud, identity_and_network, token

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "static-s3cret-token"


# --- what is refused, and the defaults ----------------------------------------------------------


def test_the_defaults_serve_loopback_only_and_need_no_authentication_there() -> None:
    api = ApiSettings()
    assert api.addresses == ("127.0.0.1", "::1") and api.loopback_only
    assert api.strategy == "none" and api.exposure() == ""
    for name in ("orchestrator.ini", "demo.ini"):
        shipped = configparser.ConfigParser(interpolation=None)
        shipped.read(ROOT / "etc" / name)
        assert shipped["api"]["listen"] == "127.0.0.1, ::1", name
    assert not shipped["api"].getboolean("allow_unauthenticated")


@pytest.mark.parametrize(
    "listen", ["127.0.0.1", "127.3.4.5", "::1", "[::1]", "localhost", "127.0.0.1, [::1]"]
)
def test_loopback_addresses_need_no_authentication(listen: str) -> None:
    assert ApiSettings(listen=listen).exposure() == ""


@pytest.mark.parametrize(
    "listen", ["::", "0.0.0.0", "192.0.2.10", "api.example.org", "fe80::1", "127.0.0.1, ::"]
)
def test_an_unauthenticated_api_beyond_loopback_is_refused_naming_the_keys(listen: str) -> None:
    with pytest.raises(SettingsError) as refused:
        ApiSettings(listen=listen).exposure()
    message = str(refused.value)
    beyond = listen.split(", ")[-1]  # the address named: the one that is not loopback
    assert message.startswith(f"[api] listen: {beyond} is not a loopback address")
    for key in ("auth_strategy", "auth_token", "allow_unauthenticated", "listen = 127.0.0.1"):
        assert key in message
    assert "\n" not in message


def test_serving_it_open_is_the_operators_explicit_choice_and_warned() -> None:
    warning = ApiSettings(listen="::", allow_unauthenticated=True).exposure()
    assert "without authentication" in warning and "allow_unauthenticated" in warning
    for authenticated in (
        ApiSettings(listen="::", auth_token=TOKEN),
        ApiSettings(listen="::", auth_strategy="keystone"),
    ):
        assert authenticated.exposure() == ""


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        (
            {"auth_strategy": "ldap"},
            "[api] auth_strategy: 'ldap' is not one of none, token, keystone",
        ),
        ({"auth_strategy": "token"}, "[api] auth_token: is required with auth_strategy = token"),
        (
            {"auth_strategy": "none", "auth_token": TOKEN},
            "[api] auth_token: is set but auth_strategy = none",
        ),
        ({"auth_token": "two words"}, "[api] auth_token: must be printable ASCII without spaces"),
        ({"required_role": ""}, "[api] required_role: must be one Keystone role name"),
        ({"token_cache_time": 0.0}, "[api] token_cache_time: must be positive"),
        ({"token_cache_size": 0}, "[api] token_cache_size: must be at least 1"),
        ({"client_timeout": -1.0}, "[api] client_timeout: must be positive"),
    ],
)
def test_bad_api_settings_name_the_key(values: dict[str, Any], needle: str) -> None:
    with pytest.raises(SettingsError, match=None) as refused:
        ApiSettings(**values)
    assert str(refused.value).startswith(needle)


def test_the_strategy_follows_the_token_when_not_given() -> None:
    assert ApiSettings(auth_token=TOKEN).strategy == "token"
    assert ApiSettings(auth_strategy="keystone", auth_token=TOKEN).strategy == "keystone"


def write_ini(tmp_path: Path, api: str, sim: str = "port = 0\n") -> Path:
    path = tmp_path / "o.ini"
    path.write_text(
        f"[orchestrator]\nstate_dir = {tmp_path / 'state'}\nembedded_sim = true\n"
        f"[api]\n{api}[sim]\n{sim}"
    )
    return path


@pytest.mark.services  # astara-api and the orchestrator in processes of their own
def test_astara_api_and_the_orchestrator_refuse_an_open_api_with_one_line(tmp_path: Path) -> None:
    ini = write_ini(tmp_path, "listen = ::\nport = 44250\n")
    for module, code in (("astara_actors.api", 1), ("astara_actors.daemon", 2)):
        done = subprocess.run(
            [sys.executable, "-m", module, "--config-file", str(ini)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
        assert done.returncode == code, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
        assert "[api] listen: :: is not a loopback address" in lines[0]
        assert "allow_unauthenticated = true" in lines[0]
    assert not (tmp_path / "state").exists()  # refused before anything started


@pytest.mark.services  # gunicorn
def test_an_open_api_chosen_explicitly_starts_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    ini = write_ini(tmp_path, f"listen = 0.0.0.0\nport = {port}\nallow_unauthenticated = true\n")
    config = load_config(ini)
    with caplog.at_level(logging.WARNING, logger="astara_actors.api"):
        assert "ANYONE" in check_api_settings(config)
        proc = run_api(ini, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        assert any(
            r.levelno == logging.WARNING and "without authentication" in r.getMessage()
            for r in caplog.records
        )
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_keystone_needs_a_keystone_to_ask(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ini = write_ini(tmp_path, "listen = ::\nauth_strategy = keystone\n")
    with pytest.raises(SettingsError, match=r"\[api\] auth_strategy: keystone needs a Keystone"):
        check_api_settings(load_config(ini))
    assert main(["--config-file", str(ini)]) == 1
    assert "[sim] port" in capsys.readouterr().err
    fixed = load_config(write_ini(tmp_path, "auth_strategy = keystone\n", "port = 9911\n"))
    account = keystone_account(fixed)
    assert account.auth_url == "http://127.0.0.1:9911/identity/v3"
    assert account.username == fixed.sim.admin_user


# --- Keystone ------------------------------------------------------------------------------------


@pytest.fixture
def cloud() -> Iterator[SimCloud]:
    with identity_and_network() as running:
        running.keystone.add_user("operator", PASSWORD, "ops", roles=("member", "reader", "admin"))
        yield running


def account(cloud: SimCloud, password: str = PASSWORD) -> CloudSettings:
    return CloudSettings(
        auth_url=f"{cloud.auth_url}/v3", username="admin", password=password, project_name="admin"
    )


class Counting:
    """A TokenSource that counts what reaches Keystone."""

    def __init__(self, source: Any) -> None:
        self.source = source
        self.uri = source.uri
        self.asked: list[str] = []

    def __call__(self, subject: str) -> KeystoneIdentity | None:
        self.asked.append(subject)
        return self.source(subject)


def keystone_client(fake: FakeControl, source: Any, **settings: Any) -> falcon.testing.TestClient:
    api = ApiSettings(auth_strategy="keystone", **settings)
    return falcon.testing.TestClient(create_app(lambda: fake, api, keystone=source))


def test_keystone_tokens_with_the_role_are_accepted_and_named_in_the_audit_trail(
    cloud: SimCloud, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeControl()
    source = Counting(KeystoneTokens(account(cloud)))
    client = keystone_client(fake, source)
    operator = token(cloud, "operator", "ops")
    member = token(cloud, "realos-t1")
    with caplog.at_level(logging.DEBUG):
        missing = client.simulate_put("/poll")
        bogus = client.simulate_put("/poll", headers={"X-Auth-Token": "f" * 64})
        accepted = client.simulate_put(
            "/poll", headers={"X-Auth-Token": operator}, remote_addr="192.0.2.9"
        )
        forbidden = client.simulate_put("/poll", headers={"X-Auth-Token": member})
        again = client.simulate_get("/routers", headers={"X-Auth-Token": operator})
    for refused in (missing, bogus):
        assert refused.status_code == 401 and refused.json["error"]
        assert refused.headers["WWW-Authenticate"] == f'Keystone uri="{cloud.auth_url}/v3"'
    assert "X-Auth-Token" in missing.json["error"]
    assert accepted.status_code == 202 and again.status_code == 200
    assert fake.on_behalf_of == ["keystone user operator (project ops) via http client 192.0.2.9"]
    assert forbidden.status_code == 403
    assert "realos-t1" in forbidden.json["error"] and "admin" in forbidden.json["error"]
    assert source.asked == ["f" * 64, operator, member]  # the second use of operator: cached
    for secret in (operator, member, PASSWORD):
        assert secret not in caplog.text


def test_the_public_paths_stay_open_and_metrics_only_when_told(cloud: SimCloud) -> None:
    source = KeystoneTokens(account(cloud))
    closed = keystone_client(FakeControl(), source)
    assert closed.simulate_get("/healthz").status_code == 200
    assert closed.simulate_get("/openapi.json").status_code == 200
    assert closed.simulate_get("/metrics").status_code == 401
    opened = keystone_client(FakeControl(), source, metrics_open=True)
    assert opened.simulate_get("/metrics").status_code == 200
    assert opened.simulate_get("/routers").status_code == 401


def test_the_static_token_is_accepted_beside_keystone_when_set(cloud: SimCloud) -> None:
    fake = FakeControl()
    client = keystone_client(fake, KeystoneTokens(account(cloud)), auth_token=TOKEN)
    assert (
        client.simulate_put("/poll", headers={"Authorization": f"Bearer {TOKEN}"}).status_code
        == 202
    )
    refused = client.simulate_put("/poll", headers={"Authorization": "Bearer nope"})
    assert refused.status_code == 401
    challenges = refused.headers["WWW-Authenticate"]
    assert 'Bearer realm="astara"' in challenges and "Keystone uri=" in challenges
    document = client.simulate_get("/openapi.json").json
    assert document["security"] == [{"bearer": []}, {"keystone": []}]
    scheme = document["components"]["securitySchemes"]["keystone"]
    assert scheme == {**scheme, "type": "apiKey", "in": "header", "name": "X-Auth-Token"}
    assert "403" in document["paths"]["/poll"]["put"]["responses"]


def test_keystone_that_cannot_answer_is_503_and_not_cached(cloud: SimCloud) -> None:
    operator = token(cloud, "operator", "ops")
    wrong = keystone_client(FakeControl(), KeystoneTokens(account(cloud, password="wrong")))
    refused = wrong.simulate_put("/poll", headers={"X-Auth-Token": operator})
    assert refused.status_code == 503 and "Keystone" in refused.json["error"]

    class Flaky:
        uri = "http://keystone"
        down = True

        def __call__(self, subject: str) -> KeystoneIdentity | None:
            if self.down:
                raise KeystoneUnavailable("cannot reach Keystone to validate the token")
            return KeystoneIdentity("u", "operator", "p", "ops", ("admin",), 0.0)

    flaky = Flaky()
    client = keystone_client(FakeControl(), flaky)
    assert client.simulate_put("/poll", headers={"X-Auth-Token": "a" * 40}).status_code == 503
    flaky.down = False
    assert client.simulate_put("/poll", headers={"X-Auth-Token": "a" * 40}).status_code == 202


def test_a_malformed_token_is_refused_without_asking_keystone(cloud: SimCloud) -> None:
    source = Counting(KeystoneTokens(account(cloud)))
    client = keystone_client(FakeControl(), source)
    for bad in ("x" * 9000, "two words", "é"):
        answer = client.simulate_put("/poll", headers={"X-Auth-Token": bad})
        assert answer.status_code == 401 and "malformed" in answer.json["error"]
    assert source.asked == []


def test_the_cache_keeps_valid_and_invalid_answers_for_a_bounded_time_and_size() -> None:
    asked: list[str] = []
    wall = FakeClock(1_700_000_000.0)

    def source(subject: str) -> KeystoneIdentity | None:
        asked.append(subject)
        if subject.startswith("good"):
            return KeystoneIdentity("u", "n", "p", "q", ("admin",), wall.now + 100)
        return None

    source.uri = "http://k"  # type: ignore[attr-defined]
    clock = FakeClock(1000.0)
    validator = KeystoneValidator(source, cache_time=60, cache_size=3, clock=clock, wall=wall)
    assert validator.identity("good-1") is not None and validator.identity("bad-1") is None
    assert validator.identity("good-1") is not None and validator.identity("bad-1") is None
    assert asked == ["good-1", "bad-1"]
    clock.advance(61)  # past token_cache_time: asked again
    validator.identity("bad-1")
    assert asked[-1] == "bad-1" and len(asked) == 3
    for name in ("bad-2", "bad-3", "bad-4"):
        validator.identity(name)
    assert len(validator) == 3  # the oldest were dropped
    # Never past the token's own expiry: it expires in 100 s, the cache would keep it 60 s...
    wall.advance(0)
    assert validator.identity("good-2") is not None
    clock.advance(30)
    wall.advance(30)
    short = KeystoneValidator(source, cache_time=600, cache_size=3, clock=clock, wall=wall)
    assert short.identity("good-3") is not None
    clock.advance(101)
    wall.advance(101)
    before = len(asked)
    short.identity("good-3")
    assert len(asked) == before + 1  # ...and with 600 s of cache time, asked again at 101 s


def test_an_expired_token_body_is_not_an_identity() -> None:
    body = {
        "token": {
            "user": {"id": "u", "name": "n"},
            "project": {"id": "p", "name": "q"},
            "roles": [{"name": "admin"}],
            "expires_at": "2001-01-01T00:00:00.000000Z",
        }
    }
    assert identity_of(body) is None
    body["token"]["expires_at"] = "2999-01-01T00:00:00.000000Z"
    found = identity_of(body)
    assert (
        found is not None
        and found.has_role("Admin")
        and found.who() == "keystone user n (project q)"
    )


def test_names_from_keystone_reach_the_audit_trail_printable_and_bounded() -> None:
    who = KeystoneIdentity("u", "evil\nname\x1b[31m" + "x" * 200, "p", "", (), 0.0).who()
    assert "\n" not in who and "\x1b" not in who and len(who) < 100


def test_the_document_declares_keystone_without_the_bearer_when_only_keystone() -> None:
    document = openapi_document(keystone=True, required_role="operator")
    assert document["security"] == [{"keystone": []}]
    assert "operator" in document["components"]["securitySchemes"]["keystone"]["description"]
    assert document["paths"]["/healthz"]["get"]["security"] == []
    assert "security" not in openapi_document()
