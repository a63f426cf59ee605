"""One openstacksdk call at the adapter edge: bounded retries, quiet SDK warnings, our errors.

Nothing here imports ``openstack`` at module level: the vendor modules are imported on the
first failure, when the SDK is already loaded.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from astara_actors.errors import CloudError

__all__ = ["SdkCalls", "quiet_sdk_warnings", "raise_for_status"]

LOG = logging.getLogger(__name__)
T = TypeVar("T")

# 503 means the service did not take the request: safe to resend even a POST. The other 5xx
# may follow a half-done create, so only calls that can be repeated safely retry on them.
_RETRY_ANY = frozenset({503})
_RETRY_IDEMPOTENT = frozenset({500, 502, 503, 504})
_MAX_DELAY = 10.0

_SDK_WARNINGS: list[tuple[Any, ...]] = []


def quiet_sdk_warnings() -> None:
    """Ignore openstacksdk's own deprecation warnings (they break ``-W error``).

    A process-wide filter, kept at the front of the list: ``warnings.catch_warnings`` is not
    thread-safe, and pytest replaces the filters around each test.
    """
    if not _SDK_WARNINGS:
        from openstack import warnings as sdk_warnings

        categories = (
            sdk_warnings.OpenStackDeprecationWarning,
            sdk_warnings.RemovedInSDK50Warning,
            sdk_warnings.RemovedInSDK60Warning,
        )
        _SDK_WARNINGS.extend(("ignore", None, c, None, 0) for c in categories)
    if warnings.filters[: len(_SDK_WARNINGS)] != _SDK_WARNINGS:
        for _, _, category, _, _ in reversed(_SDK_WARNINGS):
            warnings.filterwarnings("ignore", category=category)


def next_page(links: Any) -> str | None:
    """The ``rel=next`` href of an OpenStack ``*_links`` list (Neutron, Nova), if any."""
    for link in links or ():
        if isinstance(link, dict) and link.get("rel") == "next" and link.get("href"):
            return str(link["href"])
    return None


def get_all(
    proxy: Any, path: str, key: str, params: Mapping[str, str | list[str]] | None = None
) -> Any:
    """``GET path`` raw through an SDK proxy (its auth, endpoint and retries) and the ``key``
    member of the JSON answer; a list follows the ``<key>_links`` pages. No SDK resource
    objects: building them costs ~5 ms of CPU per Nova server."""
    response = proxy.get(path, params=params or None)
    raise_for_status(response)
    body = response.json()
    found = body[key]
    if not isinstance(found, list):
        return found
    items = list(found)
    nxt = next_page(body.get(f"{key}_links"))
    while nxt:
        time.sleep(0)  # let the other threads run between pages: a page's decode holds the GIL
        response = proxy.get(nxt)
        raise_for_status(response)
        body = response.json()
        items.extend(body[key])
        nxt = next_page(body.get(f"{key}_links"))
    return items


def raise_for_status(response: Any) -> None:
    """Raise the SDK's ``HttpException`` for a raw proxy response of 400 or more."""
    from openstack import exceptions

    exceptions.raise_from_response(response)


def _status(exc: BaseException) -> int | None:
    code = getattr(exc, "status_code", None) or getattr(exc, "http_status", None)
    return code if isinstance(code, int) else None


def _vendor_errors() -> tuple[type[BaseException], ...]:
    import keystoneauth1.exceptions
    import requests
    from openstack import exceptions

    return (
        exceptions.SDKException,
        keystoneauth1.exceptions.ClientException,
        requests.RequestException,
    )


def _is_connection_error(exc: BaseException) -> bool:
    import keystoneauth1.exceptions as ks
    import requests

    if isinstance(exc, (ks.SSLError, requests.exceptions.SSLError)):
        return False  # a certificate problem does not go away on retry
    return isinstance(
        exc, (ks.ConnectFailure, ks.ConnectTimeout, requests.ConnectionError, requests.Timeout)
    )


class SdkCalls:
    """Runs SDK calls for one adapter, translating failures into ``error``."""

    def __init__(
        self,
        error: type[CloudError],
        *,
        retries: int = 3,
        retry_delay: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._error = error
        self._retries = retries
        self._retry_delay = retry_delay
        self._sleep = sleep

    def run(
        self,
        what: str,
        call: Callable[[], T],
        *,
        idempotent: bool = True,
        on_missing: Callable[[], T] | None = None,
    ) -> T:
        """``call()``; a 404 gives ``on_missing()``; other vendor errors raise ``error``.

        Retries up to ``retries`` times with exponential backoff on 5xx answers and
        connection failures; a call that is not ``idempotent`` retries only on 503.
        """
        attempt = 0
        while True:
            quiet_sdk_warnings()
            try:
                return call()
            except Exception as exc:
                if not isinstance(exc, _vendor_errors()):
                    raise
                status = _status(exc)
                if status == 404 and on_missing is not None:
                    return on_missing()
                if attempt < self._retries and self._retriable(exc, status, idempotent):
                    delay = min(self._retry_delay * 2**attempt, _MAX_DELAY)
                    LOG.info("%s failed (%s); retrying in %.1fs", what, exc, delay)
                    self._sleep(delay)
                    attempt += 1
                    continue
                raise self._error(f"{what}: {_describe(exc, status)}") from None

    @staticmethod
    def _retriable(exc: BaseException, status: int | None, idempotent: bool) -> bool:
        if status is not None:
            return status in (_RETRY_IDEMPOTENT if idempotent else _RETRY_ANY)
        # keystoneauth reports read timeouts as ConnectTimeout and resets as ConnectFailure,
        # after the server may have acted: only calls that can be repeated retry on them.
        return idempotent and _is_connection_error(exc)


def _describe(exc: BaseException, status: int | None) -> str:
    if status == 401:  # keystoneauth renews expired tokens itself: a 401 is a refused login
        return (
            "Keystone refused the orchestrator's credentials (check [cloud] auth_url, "
            "username, password and project, or the clouds.yaml cloud): HTTP 401"
        )
    text = str(exc) or type(exc).__name__
    return f"HTTP {status}: {text}" if status and str(status) not in text else text
