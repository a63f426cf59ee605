"""Keystone authentication of the API: ``X-Auth-Token`` validated with ``GET /v3/auth/tokens``.

The API asks Keystone about a caller's token (``X-Subject-Token``) as the orchestrator's own
``[cloud]`` account (a keystoneauth session through openstacksdk, the account's token reused
and renewed by keystoneauth), as keystonemiddleware does. Results, valid AND invalid, are cached
per API worker process for ``[api] token_cache_time`` seconds (never past the token's own
expiry), at most ``[api] token_cache_size`` of them, keyed by the token's SHA-256: the tokens
themselves are neither kept nor logged. A Keystone that cannot be asked is a 503, not cached.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from astara_actors.api.errors import KeystoneUnavailable
from astara_actors.errors import SettingsError

if TYPE_CHECKING:
    from astara_actors.config.cloud import CloudSettings
    from astara_actors.config.loader import Config

__all__ = [
    "KeystoneIdentity",
    "KeystoneTokens",
    "KeystoneUnavailable",
    "KeystoneValidator",
    "TokenSource",
    "keystone_account",
    "plausible_token",
    "tokens_url",
]

LOG = logging.getLogger(__name__)

#: Longest token the API sends to Keystone (Fernet tokens are ~250 characters, JWS ~800).
MAX_TOKEN = 8192
#: Longest user or project name the audit trail repeats.
MAX_NAME = 64


@dataclass(frozen=True, slots=True)
class KeystoneIdentity:
    """Who a valid token speaks for: as Keystone's token body says."""

    user_id: str
    user_name: str
    project_id: str
    project_name: str
    roles: tuple[str, ...]
    expires_at: float  # unix time; 0 = Keystone did not say

    def has_role(self, role: str) -> bool:
        wanted = role.casefold()
        return any(r.casefold() == wanted for r in self.roles)

    def who(self) -> str:
        """The audit trail's words for the caller: ``keystone user admin (project admin)``."""
        user = _clean(self.user_name) or _clean(self.user_id) or "?"
        project = _clean(self.project_name) or _clean(self.project_id)
        return f"keystone user {user}" + (f" (project {project})" if project else "")


def _clean(text: str) -> str:
    """A name from Keystone as a log line may carry it: printable, bounded."""
    return "".join(c for c in str(text) if c.isprintable())[:MAX_NAME]


def plausible_token(token: str) -> bool:
    """Whether ``token`` could be a Keystone token at all (else it is refused unasked)."""
    return 0 < len(token) <= MAX_TOKEN and all(33 <= ord(c) < 127 for c in token)


class TokenSource(Protocol):
    """Asks Keystone about one token: its identity, None when Keystone says it is not valid;
    raises :class:`KeystoneUnavailable` when Keystone cannot say."""

    uri: str  # the Keystone a client should get its token from (WWW-Authenticate)

    def __call__(self, token: str) -> KeystoneIdentity | None: ...


class KeystoneValidator:
    """A :class:`TokenSource` behind a bounded, time-bounded cache of its answers."""

    def __init__(
        self,
        source: TokenSource,
        *,
        cache_time: float,
        cache_size: int,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.source = source
        self.cache_time = cache_time
        self.cache_size = cache_size
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self._cache: OrderedDict[bytes, tuple[float, KeystoneIdentity | None]] = OrderedDict()

    @property
    def uri(self) -> str:
        return self.source.uri

    def identity(self, token: str) -> KeystoneIdentity | None:
        """The token's identity (None: not valid), from the cache or from Keystone."""
        key = hashlib.sha256(token.encode("utf-8", "replace")).digest()
        now = self._clock()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                if hit[0] > now:
                    self._cache.move_to_end(key)
                    return hit[1]
                del self._cache[key]
        found = self.source(token)
        until = now + self.cache_time
        if found is not None and found.expires_at:
            left = found.expires_at - self._wall()
            if left <= 0:
                found = None  # expired while we asked: as Keystone would answer next time
            else:
                until = min(until, now + left)
        with self._lock:
            self._cache[key] = (until, found)
            self._cache.move_to_end(key)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return found

    def __len__(self) -> int:
        return len(self._cache)


def tokens_url(auth_url: str) -> str:
    """``.../v3/auth/tokens`` for an auth URL with or without its ``/v3``."""
    base = auth_url.rstrip("/")
    return f"{base}/auth/tokens" if base.endswith("/v3") else f"{base}/v3/auth/tokens"


def keystone_account(config: Config) -> CloudSettings:
    """The account the API validates tokens as: ``[cloud]``, or the embedded simulator's admin.

    Raises :class:`SettingsError` when there is none to use.
    """
    if config.cloud is not None:
        return config.cloud
    from astara_actors.config.cloud import CloudSettings

    sim = config.sim
    if sim is None or not sim.port:
        raise SettingsError(
            "api",
            "auth_strategy",
            "keystone needs a Keystone to ask: a [cloud] "
            "account, or the embedded simulator on a fixed [sim] port (not 0)",
        )
    host = sim.listen if ":" not in sim.listen else f"[{sim.listen}]"
    base = sim.public_url.rstrip("/") or f"http://{host}:{sim.port}"
    return CloudSettings(
        auth_url=f"{base}/identity/v3",
        username=sim.admin_user,
        password=sim.admin_password,
        project_name=sim.admin_project,
    )


class KeystoneTokens:
    """:class:`TokenSource` over HTTP: ``GET /v3/auth/tokens`` as the ``[cloud]`` account.

    The session (openstacksdk's keystoneauth one) is made on first use, in the worker process
    and thread that needs it; keystoneauth gets and renews the account's own token.
    """

    def __init__(self, account: CloudSettings, *, timeout: float = 10.0) -> None:
        self.account = account
        self.timeout = timeout
        self.uri = account.auth_url
        self._lock = threading.Lock()
        self._session: Any = None
        self._url = ""

    def _connect(self) -> tuple[Any, str]:
        with self._lock:
            if self._session is None:
                from astara_actors.adapters.openstack import connect

                try:
                    conn = connect(self.account)
                except Exception as exc:  # noqa: BLE001 - a broken [cloud]: no token checks
                    raise KeystoneUnavailable(f"cannot connect to Keystone: {exc}") from None
                session = conn.session
                auth_url = getattr(session.auth, "auth_url", "") or self.account.auth_url
                self.uri = self.uri or auth_url
                self._url = tokens_url(auth_url)
                self._session = session
            return self._session, self._url

    def __call__(self, token: str) -> KeystoneIdentity | None:
        session, url = self._connect()
        try:
            resp = session.get(
                url,
                headers={"X-Subject-Token": token},
                params={"nocatalog": ""},
                raise_exc=False,
                timeout=self.timeout,
            )
        except Exception as exc:  # noqa: BLE001 - keystoneauth's own errors, connection refused…
            LOG.warning("cannot validate a token with Keystone at %s: %s", url, type(exc).__name__)
            raise KeystoneUnavailable("cannot reach Keystone to validate the token") from None
        status = resp.status_code
        if status == 404:
            return None
        if status == 200:
            try:
                return identity_of(resp.json())
            except (ValueError, TypeError, AttributeError) as exc:
                LOG.error("Keystone at %s answered a token body we cannot read: %s", url, exc)
                raise KeystoneUnavailable("Keystone's answer could not be read") from None
        if status in (401, 403):
            LOG.error(
                "Keystone at %s refused the API's own [cloud] account (HTTP %d): it must "
                "hold the admin or service role to validate tokens",
                url,
                status,
            )
        else:
            LOG.warning("Keystone at %s answered HTTP %d to a token validation", url, status)
        raise KeystoneUnavailable(f"Keystone could not validate the token (HTTP {status})")


def identity_of(body: Mapping[str, Any]) -> KeystoneIdentity | None:
    """The identity in a ``{"token": {...}}`` validation body (None: expired already)."""
    token = body["token"]
    user = token.get("user") or {}
    project = token.get("project") or {}
    roles = tuple(str(r.get("name", "")) for r in token.get("roles") or () if isinstance(r, dict))
    expires = 0.0
    if token.get("expires_at"):
        moment = datetime.datetime.fromisoformat(str(token["expires_at"]))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.UTC)
        expires = moment.timestamp()
        if expires <= time.time():
            return None
    return KeystoneIdentity(
        user_id=str(user.get("id", "")),
        user_name=str(user.get("name", "")),
        project_id=str(project.get("id", "")),
        project_name=str(project.get("name", "")),
        roles=roles,
        expires_at=expires,
    )
