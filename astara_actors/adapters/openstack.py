"""The real Network and Compute adapters: Neutron and Nova through openstacksdk.

Importing this module does not import ``openstack`` (≈0.5 s); :func:`connect` does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from astara_actors.adapters._os_calls import quiet_sdk_warnings
from astara_actors.adapters._os_compute import OpenStackCompute
from astara_actors.adapters._os_network import OpenStackNetwork
from astara_actors.config.cloud import CloudSettings
from astara_actors.errors import CloudError

if TYPE_CHECKING:
    from openstack.connection import Connection

__all__ = ["CloudSettings", "OpenStackCompute", "OpenStackNetwork", "connect", "open_cloud"]


_POOL_SIZE = 64  # kept connections per API endpoint (Keystone, Neutron, Nova)


def connect(cloud: CloudSettings) -> Connection:
    """A lazy openstacksdk connection (nothing is sent before the first call).

    keystoneauth's own retries are off: :class:`SdkCalls` retries in one place, and only
    where a resend is safe (keystoneauth would resend a POST after a read timeout).
    """
    import openstack

    quiet_sdk_warnings()
    common: dict[str, Any] = {
        "api_timeout": cloud.api_timeout,
        "connect_retries": 0,
        "status_code_retries": 0,
    }
    if cloud.region_name:
        common["region_name"] = cloud.region_name
    if cloud.compute_endpoint:  # a real Neutron with simulated compute (astara-sim)
        common["compute_endpoint_override"] = cloud.compute_endpoint
    try:
        if cloud.cloud:  # clouds.yaml found the usual way (OS_CLIENT_CONFIG_FILE included)
            return openstack.connect(cloud=cloud.cloud, **common)
        return openstack.connect(
            auth_url=cloud.auth_url,
            username=cloud.username,
            password=cloud.password,
            project_name=cloud.project_name,
            user_domain_name=cloud.user_domain_name,
            project_domain_name=cloud.project_domain_name,
            interface=cloud.interface,
            verify=cloud.verify,
            # neither clouds.yaml nor OS_*: a developer's OS_CLOUD would break explicit auth
            load_yaml_config=False,
            load_envvars=False,
            **common,
        )
    except openstack.exceptions.SDKException as exc:  # e.g. an unknown clouds.yaml name
        raise CloudError(f"connect to OpenStack: {exc}") from None


def _widen_pool(conn: Connection, size: int = _POOL_SIZE) -> None:
    """Keep more than requests' 10 connections per host: every router actor calls the same
    few API endpoints, and a connection thrown away is a new TCP (and TLS) handshake."""
    from requests.adapters import HTTPAdapter

    session = conn.session.session  # keystoneauth's requests.Session
    for scheme in ("http://", "https://"):
        session.mount(scheme, HTTPAdapter(pool_connections=16, pool_maxsize=size, max_retries=0))


def open_cloud(
    cloud: CloudSettings,
    *,
    sleep: Callable[[float], None] = time.sleep,
    pool_size: int = _POOL_SIZE,
) -> tuple[OpenStackNetwork, OpenStackCompute]:
    """Both adapters over one connection, with the retries and status mode of ``cloud``;
    ``pool_size`` connections kept per endpoint (as many as threads may call at once)."""
    conn = connect(cloud)
    _widen_pool(conn, pool_size)
    return (
        OpenStackNetwork(
            conn,
            status_mode=cloud.status_mode,
            retries=cloud.retries,
            retry_delay=cloud.retry_delay,
            sleep=sleep,
        ),
        OpenStackCompute(conn, retries=cloud.retries, retry_delay=cloud.retry_delay, sleep=sleep),
    )
