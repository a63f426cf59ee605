"""The simulated Keystone validates tokens as Keystone does (``GET /v3/auth/tokens``): what
the API's Keystone authentication asks it, and what keystonemiddleware asks a real one."""

from __future__ import annotations

from typing import Any

import falcon
import falcon.testing
import pytest

from astara_actors.sim._http import AuthMiddleware
from astara_actors.sim.keystone.api import add_keystone_routes
from astara_actors.sim.keystone.model import KeystoneModel
from astara_actors.testing import FakeClock

PASSWORD = "secret"
URL = "/identity/v3/auth/tokens"


@pytest.fixture
def world() -> tuple[falcon.testing.TestClient, KeystoneModel, FakeClock]:
    clock = FakeClock(1_700_000_000.0)
    keystone = KeystoneModel(admin_password=PASSWORD, token_ttl=3600, clock=clock)
    keystone.add_user("alice", PASSWORD, "alice-project")
    app = falcon.App(middleware=[AuthMiddleware(keystone)])
    add_keystone_routes(app, keystone, endpoints=lambda: {"identity": "http://k/identity/v3"})
    return falcon.testing.TestClient(app), keystone, clock


def get(client: falcon.testing.TestClient, auth: str, subject: str, **params: Any) -> Any:
    return client.simulate_get(
        URL, params=params or None, headers={"X-Auth-Token": auth, "X-Subject-Token": subject}
    )


def test_a_valid_token_is_200_with_its_user_project_and_roles(world: Any) -> None:
    client, keystone, _clock = world
    admin = keystone.authenticate("admin", PASSWORD, "admin").id
    alice = keystone.authenticate("alice", PASSWORD, "alice-project").id
    answer = get(client, admin, alice)
    assert answer.status_code == 200
    assert answer.headers["X-Subject-Token"] == alice
    token = answer.json["token"]
    assert token["user"]["name"] == "alice" and token["project"]["name"] == "alice-project"
    assert sorted(r["name"] for r in token["roles"]) == ["member", "reader"]
    assert token["expires_at"].endswith("Z") and "catalog" in token
    assert "catalog" not in get(client, admin, alice, nocatalog="").json["token"]


def test_unknown_and_expired_subject_tokens_are_404(world: Any) -> None:
    client, keystone, clock = world
    admin = keystone.authenticate("admin", PASSWORD, "admin").id
    assert get(client, admin, "f" * 64).status_code == 404
    alice = keystone.authenticate("alice", PASSWORD, "alice-project").id
    keystone.revoke(alice)
    assert get(client, admin, alice).status_code == 404
    short = KeystoneModel(admin_password=PASSWORD, token_ttl=10, clock=clock)
    app = falcon.App(middleware=[AuthMiddleware(short)])
    add_keystone_routes(app, short, endpoints=dict)
    other = falcon.testing.TestClient(app)
    subject = short.authenticate("admin", PASSWORD, "admin").id
    clock.advance(5)
    fresh = short.authenticate("admin", PASSWORD, "admin").id
    assert get(other, fresh, subject).status_code == 200
    clock.advance(6)  # subject expired, fresh not yet
    answer = get(other, fresh, subject)
    assert answer.status_code == 404 and answer.json["error"]["code"] == 404


def test_a_bad_x_auth_token_is_401(world: Any) -> None:
    client, keystone, _clock = world
    alice = keystone.authenticate("alice", PASSWORD, "alice-project").id
    answer = get(client, "not-a-token", alice)
    assert answer.status_code == 401 and "Keystone uri=" in answer.headers["WWW-Authenticate"]
    assert client.simulate_get(URL, headers={"X-Subject-Token": alice}).status_code == 401


def test_only_an_admin_a_service_or_the_tokens_owner_may_validate_it(world: Any) -> None:
    client, keystone, _clock = world
    keystone.add_user("bob", PASSWORD, "bob-project")
    keystone.add_user("nova", PASSWORD, "service", roles=("service",))
    alice = keystone.authenticate("alice", PASSWORD, "alice-project").id
    bob = keystone.authenticate("bob", PASSWORD, "bob-project").id
    service = keystone.authenticate("nova", PASSWORD, "service").id
    refused = get(client, bob, alice)
    assert (
        refused.status_code == 403 and "identity:validate_token" in refused.json["error"]["message"]
    )
    assert get(client, bob, "f" * 64).status_code == 403  # as Keystone: no target, no subject
    assert get(client, alice, alice).status_code == 200
    assert get(client, service, alice).status_code == 200
