"""The simulator's SSH server: the key from the VM's user data opens a session as ``astara``."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import paramiko
import pytest

from astara_actors.sim.appliances.ssh import authorized_keys
from astara_actors.sim.cloud import SimCloud
from astara_actors.sim.settings import SimSettings
from astara_actors.testing import free_port


@pytest.fixture
def cloud() -> Iterator[SimCloud]:
    c = SimCloud(
        SimSettings(port=0, tenants=1, routers_per_tenant=1, boot_delay=0.0, ssh_port=free_port())
    ).start()
    c.bootstrap()
    yield c
    c.stop()


def boot(cloud: SimCloud, key: paramiko.PKey) -> tuple[str, str]:
    router = next(iter(cloud.topology))
    admin, neutron = cloud.admin, cloud.neutron
    assert neutron is not None
    mgt = neutron.create(
        "port", {"network_id": cloud.management_network_id, "name": f"ASTARA:MGT:{router}"}, admin
    )
    user_data = (
        "#cloud-config\nusers:\n  - name: astara\n    ssh-authorized-keys:\n"
        f"      - {key.get_name()} {key.get_base64()} operator\n"
    )
    server = cloud.nova.create(
        admin,
        name=f"ak-router-{router}_0",
        image_id=cloud.settings.image_id,
        flavor_id=cloud.settings.flavor_id,
        port_ids=[mgt["id"]],
        user_data=base64.b64encode(user_data.encode()).decode(),
    )
    cloud.nova.tick()
    return server["id"], mgt["fixed_ips"][0]["ip_address"]


def connect(address: str, port: int, key: paramiko.PKey) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # a throwaway test server
    client.connect(
        address,
        port=port,
        username="astara",
        pkey=key,
        look_for_keys=False,
        allow_agent=False,
        timeout=10,
    )
    return client


def test_the_key_in_the_user_data_opens_a_session_and_commands_answer(cloud: SimCloud) -> None:
    key = paramiko.ECDSAKey.generate()
    server_id, address = boot(cloud, key)
    cloud.appliances.config(server_id)  # the agent is up
    client = connect(address, cloud.settings.ssh_port, key)
    try:
        _in, out, _err = client.exec_command("echo hello")
        assert out.read() == b"hello\n" and out.channel.recv_exit_status() == 0
        _in, out, _err = client.exec_command("reboot-everything")
        assert out.channel.recv_exit_status() == 127
    finally:
        client.close()


def test_another_key_is_refused(cloud: SimCloud) -> None:
    _server, address = boot(cloud, paramiko.ECDSAKey.generate())
    with pytest.raises(paramiko.AuthenticationException):
        connect(address, cloud.settings.ssh_port, paramiko.ECDSAKey.generate())


def test_keys_are_read_from_plain_or_base64_cloud_config() -> None:
    key = paramiko.ECDSAKey.generate()
    line = f"ssh-authorized-keys:\n  - {key.get_name()} {key.get_base64()} x\n"
    assert authorized_keys(line)[0] == key
    assert authorized_keys(base64.b64encode(line.encode()).decode())[0] == key
    assert authorized_keys(None) == [] and authorized_keys("garbage") == []
