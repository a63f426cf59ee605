"""The Appliance port over HTTP: the astara-appliance REST agent on a VM's management address.

One pooled ``requests.Session`` serves every actor thread (urllib3's pools are thread-safe);
keep-alive connections are kept for up to ``pool_connections`` appliances at a time. Every
``requests`` exception is translated here into :mod:`astara_actors.errors`.

The liveness probe, the one call made for every router every health period, skips ``requests``
(≈0.7 ms of CPU per call) for a plain ``http.client`` request on a fresh connection (≈0.14 ms):
no keep-alive, so 10,000 appliances hold no 10,000 idle sockets open here. The poll of a healthy
router uses :meth:`HttpAppliance.probe_async` instead: the same request on one selector thread
(:mod:`astara_actors.adapters.prober`), so probes to hung appliances hold sockets, not actor
workers.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from astara_actors.adapters.prober import Prober
from astara_actors.core.models import Interface
from astara_actors.errors import ApplianceError, ApplianceRejected, ApplianceUnreachable

__all__ = ["HttpAppliance"]

_JSON = {"Content-Type": "application/json", "Accept": "application/json"}
_PROBE = {"Accept": "application/json", "Connection": "close"}


class HttpAppliance:
    """``Appliance`` adapter: ``http://<address>:<port>/v1/...`` with per-call timeouts."""

    def __init__(
        self,
        port: int = 5000,
        *,
        pool_connections: int = 32,  # config pushes are rare per appliance: few kept warm
        pool_maxsize: int = 4,
        session: requests.Session | None = None,
    ) -> None:
        """``pool_connections``: appliances whose connections are kept;
        ``pool_maxsize``: per one."""
        self.port = port
        if session is None:
            session = requests.Session()
            session.trust_env = False  # never send management traffic through an env proxy
            session.mount(
                "http://",
                HTTPAdapter(
                    pool_connections=pool_connections, pool_maxsize=pool_maxsize, max_retries=0
                ),
            )
        self._session = session
        self._prober: Prober | None = None  # started by the first probe_async
        self._prober_lock = threading.Lock()

    def close(self) -> None:
        """Close the pooled connections and stop the asynchronous prober."""
        self._session.close()
        with self._prober_lock:
            prober, self._prober = self._prober, None
        if prober is not None:
            prober.close()

    def probe_async(
        self,
        addresses: Sequence[str],
        timeout: float,
        attempts: int,
        done: Callable[[Mapping[str, bool]], None],
    ) -> None:
        """The probe of :meth:`is_alive` for each address, each tried up to ``attempts`` times,
        without blocking: ``done(address -> answered)`` is called once, from the prober's
        thread. A hung appliance costs a socket for ``timeout``, not a thread."""
        wanted = list(dict.fromkeys(addresses))
        if not wanted:
            done({})
            return
        prober = self._get_prober()
        results: dict[str, bool] = {}

        def attempt(address: str, left: int) -> Callable[[bool], None]:
            def answered(alive: bool) -> None:
                if not alive and left > 1:
                    prober.probe(address, timeout, attempt(address, left - 1))
                    return
                results[address] = alive  # every callback runs on the prober's one thread
                if len(results) == len(wanted):
                    done(results)

            return answered

        for address in wanted:
            prober.probe(address, timeout, attempt(address, max(1, attempts)))

    def _get_prober(self) -> Prober:
        with self._prober_lock:
            if self._prober is None or self._prober.closed:
                # A prober whose thread failed answers every probe "dead": never keep that one.
                self._prober = Prober(self.port)
            return self._prober

    def url(self, address: str, path: str) -> str:
        host = f"[{address}]" if ":" in address and not address.startswith("[") else address
        return f"http://{host}:{self.port}{path}"

    def is_alive(self, address: str, timeout: float) -> bool:
        """``GET /v1/firewall/rules`` answered 200 within ``timeout``; never raises."""
        conn = None
        try:
            conn = http.client.HTTPConnection(address.strip("[]"), self.port, timeout=timeout)
            conn.request("GET", "/v1/firewall/rules", headers=_PROBE)
            return conn.getresponse().status == 200
        except Exception:  # noqa: BLE001 - the probe's contract is a bool, whatever went wrong
            return False
        finally:
            if conn is not None:
                conn.close()

    def get_interfaces(self, address: str, timeout: float) -> list[Interface]:
        """``GET /v1/system/interfaces``, in the appliance's order."""
        resp = self._request("GET", address, "/v1/system/interfaces", timeout)
        if resp.status_code != 200:
            raise ApplianceRejected(address, resp.status_code, resp.text)
        try:
            return [Interface.from_appliance(d) for d in resp.json()["interfaces"]]
        except (ValueError, KeyError, TypeError) as e:
            raise ApplianceError(address, f"malformed interfaces answer: {e!r}") from None

    def put_config(self, address: str, config: Mapping[str, Any], timeout: float) -> None:
        """``PUT /v1/system/config`` as JSON; raises ``ApplianceRejected`` unless 200."""
        body = json.dumps(config)
        resp = self._request("PUT", address, "/v1/system/config", timeout, data=body)
        if resp.status_code != 200:
            raise ApplianceRejected(address, resp.status_code, resp.text)

    def _request(
        self, method: str, address: str, path: str, timeout: float, data: str | None = None
    ) -> requests.Response:
        try:
            return self._session.request(
                method,
                self.url(address, path),
                data=data,
                timeout=timeout,
                headers=_JSON if data is not None else None,
                allow_redirects=False,
            )
        except requests.Timeout:
            raise ApplianceUnreachable(address, f"no answer within {timeout}s") from None
        except requests.RequestException as e:
            raise ApplianceUnreachable(address, _reason(e)) from None


def _reason(e: requests.RequestException) -> str:
    # requests wraps urllib3 wraps OSError; the innermost message is the useful one.
    inner: BaseException = e
    while inner.args and isinstance(inner.args[0], BaseException):
        inner = inner.args[0]
    reason = getattr(inner, "reason", None)
    return f"{type(e).__name__}: {reason or inner}"
