"""The host plug drivers: options, ``noop``, and ``linux`` for real in network namespaces.

The namespace tests create their own namespaces (``ip netns add``, as root) and delete them,
with everything in them, even when a test fails. Without ``ip netns`` they are skipped, except
under ``CI=true`` where they fail.
"""

from __future__ import annotations

import configparser
import ipaddress
import json
import logging
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from astara_actors.adapters.host_plug import (
    LinuxPlug,
    NoopPlug,
    PlugError,
    ServicePortOptions,
    address_is_local,
    make_plug,
)
from astara_actors.adapters.memory import MemoryCloud
from astara_actors.config.ini import section_to
from astara_actors.core.service_port import ServicePort, ensure_service_port
from astara_actors.errors import AstaraError, SettingsError
from astara_actors.testing.services import unavailable

MAC = "fa:16:3e:12:34:56"
PORT = ServicePort(
    id="port-1",
    mac_address=MAC,
    network_id="mgt",
    address="fd00:a57a::5",
    prefixlen=64,
    addresses=("fd00:a57a::5/64", "10.250.0.5/24"),
    mtu=1400,
)


# --- options -----------------------------------------------------------------------------------


def test_the_defaults_are_the_noop_driver_on_astara_mgt() -> None:
    options = ServicePortOptions()
    assert (options.driver, options.interface, options.member_grace) == ("noop", "astara-mgt", 3600)
    assert isinstance(make_plug(options), NoopPlug)
    assert isinstance(make_plug(ServicePortOptions(driver="linux", peer="astara-mgt-p")), LinuxPlug)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"driver": "ovs"}, "driver must be one of noop, linux, not 'ovs'"),
        ({"interface": "a-much-too-long-name"}, "interface must be an interface name"),
        ({"interface": ""}, "interface must be an interface name"),
        ({"peer": "has space"}, "peer must be an interface name"),
        ({"bridge": "br0"}, "peer must be set for bridge or peer_namespace"),
        ({"peer_namespace": "ns"}, "peer must be set for bridge or peer_namespace"),
        ({"peer": "p", "peer_namespace": "a/b"}, "peer_namespace must be a namespace name"),
        ({"peer": "astara-mgt"}, "peer must differ from interface"),
        ({"member_grace": -1.0}, "member_grace must be >= 0"),
    ],
)
def test_bad_options_are_refused_with_the_option_named(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(PlugError, match=message) as err:
        ServicePortOptions(**options)
    assert isinstance(err.value, AstaraError) and "\n" not in str(err.value)


def test_an_ini_section_loads_as_is_and_a_bad_driver_is_a_one_line_settings_error() -> None:
    parser = configparser.ConfigParser()
    parser.read_string(
        "[service_port]\ndriver = linux\ninterface = mgt0\npeer = mgt0-br\nbridge = br-mgt\n"
        "member_grace = 600\n"
    )
    options = section_to(parser, "service_port", ServicePortOptions)
    assert options == ServicePortOptions("linux", "mgt0", "mgt0-br", "br-mgt", "", 600.0)
    parser.set("service_port", "driver", "ovs")
    with pytest.raises(SettingsError) as err:
        section_to(parser, "service_port", ServicePortOptions)
    assert str(err.value) == "[service_port] driver: must be one of noop, linux, not 'ovs'"


# --- noop --------------------------------------------------------------------------------------


def test_noop_says_what_to_configure_and_warns_while_the_address_is_not_here(caplog) -> None:
    caplog.set_level(logging.INFO)
    NoopPlug(ServicePortOptions(interface="eth1"), is_local=lambda _a: False).plug(PORT)
    [info, warning] = caplog.records
    assert MAC in info.getMessage() and "fd00:a57a::5/64, 10.250.0.5/24" in info.getMessage()
    assert warning.levelno == logging.WARNING
    text = warning.getMessage()
    assert "fd00:a57a::5 is not configured on this host" in text
    for command in (
        f"ip link set dev eth1 address {MAC}",
        "ip link set dev eth1 mtu 1400",
        "ip link set dev eth1 up",
        "ip addr add fd00:a57a::5/64 dev eth1 nodad",
        "ip addr add 10.250.0.5/24 dev eth1",
    ):
        assert command in text


def test_noop_is_quiet_once_the_address_is_on_this_host(caplog) -> None:
    caplog.set_level(logging.INFO)
    # The demo's management subnet is on loopback: 127.100.0.0/16 is local to every Linux host.
    demo = ServicePort("p", MAC, "mgt", "127.100.0.2", 16, ("127.100.0.2/16",), 1500)
    NoopPlug(ServicePortOptions()).plug(demo)
    assert [r.levelno for r in caplog.records] == [logging.INFO]
    NoopPlug(ServicePortOptions()).unplug(demo)
    assert "remove 127.100.0.2/16 from interface astara-mgt" in caplog.records[-1].getMessage()


def test_address_is_local() -> None:
    assert address_is_local("127.0.0.1")
    assert not address_is_local("192.0.2.123")  # TEST-NET-1: on no host
    assert not address_is_local("not an address")


# --- linux, without root: how ip's failures are reported ---------------------------------------


def fake_ip(answers: dict[str, tuple[int, str, str]]) -> Callable[..., Any]:
    """A runner answering by the ip subcommand (``addr show``, ``link add``...)."""

    def run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        args = [a for a in argv[1:] if a not in ("-j", "-d")]
        rc, out, err = answers.get(" ".join(args[:2]), (0, "[]", ""))
        return subprocess.CompletedProcess(list(argv), rc, out, err)

    return run


def test_an_ip_failure_is_one_line_naming_the_interface_the_command_and_stderr() -> None:
    plug = LinuxPlug(
        ServicePortOptions(driver="linux", interface="mgt0", peer="mgt0-p"),
        run=fake_ip({"link add": (2, "", "RTNETLINK answers:\n  Operation not permitted\n")}),
    )
    with pytest.raises(PlugError) as err:
        plug.plug(PORT)
    message = str(err.value)
    assert message.startswith("linux plug: interface mgt0: `ip link add mgt0 address")
    assert message.endswith("failed: RTNETLINK answers: Operation not permitted")
    assert "\n" not in message


def test_a_missing_ip_command_is_a_plug_error() -> None:
    def run(argv: Sequence[str]) -> Any:
        raise FileNotFoundError(2, "No such file or directory", "ip")

    plug = LinuxPlug(ServicePortOptions(driver="linux"), run=run)
    with pytest.raises(PlugError, match="cannot run `ip` .*No such file"):
        plug.plug(PORT)


def test_an_ip_that_hangs_is_a_plug_error() -> None:
    def run(argv: Sequence[str]) -> Any:
        raise subprocess.TimeoutExpired(list(argv), 10)

    with pytest.raises(PlugError, match="did not finish in 10s"):
        LinuxPlug(ServicePortOptions(driver="linux"), run=run).unplug(PORT)


def test_an_ip_without_json_is_a_plug_error() -> None:
    plug = LinuxPlug(
        ServicePortOptions(driver="linux"), run=fake_ip({"addr show": (0, "1: lo: <UP>", "")})
    )
    with pytest.raises(PlugError, match="printed no JSON"):
        plug.plug(PORT)


def test_a_mac_that_cannot_change_while_up_is_changed_down_then_up_again() -> None:
    link = {"ifname": "eth-mgt", "flags": ["UP"], "address": "52:54:00:00:00:01", "mtu": 1400}
    link["addr_info"] = [{"local": "10.250.0.5", "prefixlen": 24, "scope": "global"}]
    link["addr_info"].append({"local": "fd00:a57a::5", "prefixlen": 64, "scope": "global"})
    commands: list[str] = []

    def run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        command = " ".join(argv[1:])
        commands.append(command)
        if "show" in argv:
            return subprocess.CompletedProcess(list(argv), 0, json.dumps([link]), "")
        if command.endswith(f"address {MAC}") and "UP" in link["flags"]:
            return subprocess.CompletedProcess(
                list(argv), 2, "", "RTNETLINK answers: Device or resource busy"
            )
        if command.endswith(f"address {MAC}"):
            link["address"] = MAC
        elif command.endswith(" down"):
            link["flags"] = []
        elif command.endswith(" up"):
            link["flags"] = ["UP"]
        return subprocess.CompletedProcess(list(argv), 0, "", "")

    LinuxPlug(ServicePortOptions(driver="linux", interface="eth-mgt"), run=run).plug(PORT)
    assert [c for c in commands if "show" not in c] == [
        f"link set dev eth-mgt address {MAC}",
        "link set dev eth-mgt down",
        f"link set dev eth-mgt address {MAC}",
        "link set dev eth-mgt up",
    ]


# --- linux, for real, in network namespaces ----------------------------------------------------


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=check)


@pytest.fixture
def netns() -> Iterator[Callable[[], str]]:
    """A factory of fresh network namespaces, all deleted afterwards (with their interfaces)."""
    if shutil.which("ip") is None:
        unavailable("the ip command (iproute2) is not installed")
    made: list[str] = []

    def make() -> str:
        name = f"astara-test-{uuid.uuid4().hex[:10]}"
        done = ip("netns", "add", name, check=False)
        if done.returncode != 0:
            unavailable(f"cannot create a network namespace: {done.stderr.strip()}")
        made.append(name)
        ip("-n", name, "link", "set", "dev", "lo", "up")
        return name

    try:
        yield make
    finally:
        for name in made:
            ip("netns", "del", name, check=False)
        leaked = set(made) & set(ip("netns", "list").stdout.split())
        assert not leaked, f"namespaces left behind: {leaked}"


def show(ns: str, iface: str) -> dict[str, Any] | None:
    done = ip("-n", ns, "-j", "-d", "addr", "show", "dev", iface, check=False)
    return json.loads(done.stdout)[0] if done.returncode == 0 else None


def addresses(state: dict[str, Any]) -> set[str]:
    return {
        f"{a['local']}/{a['prefixlen']}" for a in state["addr_info"] if a.get("scope") == "global"
    }


class Recorder:
    """The default runner, recording every command."""

    def __init__(self) -> None:
        self.commands: list[list[str]] = []

    def __call__(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        self.commands.append(list(argv))
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=10, check=False)

    def writes(self) -> list[list[str]]:
        return [c for c in self.commands if "show" not in c]


def serve_and_connect(host_ns: str, peer_ns: str, address: str) -> str:
    """A TCP listener on ``address`` in ``host_ns``, reached from ``peer_ns``: what it read."""
    family = "AF_INET6" if ipaddress.ip_address(address).version == 6 else "AF_INET"
    server = subprocess.Popen(
        ["ip", "netns", "exec", host_ns, sys.executable, "-c",
         "import socket,sys\n"
         f"s=socket.socket(socket.{family}); s.bind(({address!r}, 9697)); s.listen()\n"
         "print('ready', flush=True); s.settimeout(10); c,_=s.accept()\n"
         "print(c.recv(64).decode(), flush=True)\n"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ready", server.stderr.read()  # type: ignore[union-attr]
        client = subprocess.run(
            ["ip", "netns", "exec", peer_ns, sys.executable, "-c",
             "import socket\n"
             f"socket.create_connection(({address!r}, 9697), timeout=10).sendall(b'hello')\n"],
            capture_output=True, text=True, timeout=20,
        )  # fmt: skip
        assert client.returncode == 0, client.stderr
        out, _ = server.communicate(timeout=10)
        return out.strip()
    finally:
        server.kill()
        server.wait()


def test_a_veth_into_a_bridge_gets_the_ports_mac_and_addresses_and_is_idempotent(
    netns: Callable[[], str],
) -> None:
    host, far = netns(), netns()
    # The far side: a bridge on the management network, with an address of its own there.
    ip("-n", far, "link", "add", "br-mgt", "type", "bridge")
    ip("-n", far, "addr", "add", "10.250.0.1/24", "dev", "br-mgt")
    ip("-n", far, "addr", "add", "fd00:a57a::1/64", "dev", "br-mgt", "nodad")
    ip("-n", far, "link", "set", "dev", "br-mgt", "up")
    options = ServicePortOptions(
        driver="linux", interface="astara-mgt", peer="astara-mgt-p", bridge="br-mgt",
        peer_namespace=far,
    )  # fmt: skip
    runs = Recorder()
    plug = LinuxPlug(options, netns=host, run=runs)

    plug.plug(PORT)
    state = show(host, "astara-mgt")
    assert state is not None
    assert state["address"] == MAC
    assert state["mtu"] == 1400
    assert "UP" in state["flags"]
    assert state["linkinfo"]["info_kind"] == "veth"
    assert addresses(state) == {"fd00:a57a::5/64", "10.250.0.5/24"}
    peer = show(far, "astara-mgt-p")
    assert peer is not None and peer["master"] == "br-mgt" and "UP" in peer["flags"]
    assert peer["mtu"] == 1400
    # The service VMs' side reaches the orchestrator's address, in both families.
    assert serve_and_connect(host, far, "10.250.0.5") == "hello"
    assert serve_and_connect(host, far, "fd00:a57a::5") == "hello"

    runs.commands.clear()
    plug.plug(PORT)  # already right: only reads
    assert runs.writes() == []
    assert show(host, "astara-mgt") == state

    plug.unplug(PORT)
    assert show(host, "astara-mgt") is None
    assert show(far, "astara-mgt-p") is None  # the pair goes as one
    runs.commands.clear()
    plug.unplug(PORT)  # nothing plugged: nothing done
    assert runs.writes() == []


def test_a_new_port_replaces_the_old_ones_mac_and_address(netns: Callable[[], str]) -> None:
    host = netns()
    options = ServicePortOptions(driver="linux", interface="astara-mgt", peer="astara-mgt-p")
    plug = LinuxPlug(options, netns=host)
    plug.plug(PORT)
    # The port was deleted and created again: another MAC, another address in the subnet.
    new = ServicePort(
        "port-2", "fa:16:3e:65:43:21", "mgt", "10.250.0.9", 24, ("10.250.0.9/24",), None
    )
    plug.plug(new)
    state = show(host, "astara-mgt")
    assert state is not None
    assert state["address"] == "fa:16:3e:65:43:21"
    # The old IPv4 address (same subnet) is gone; the IPv6 one is in no subnet of the new
    # port: another network's, left alone.
    assert addresses(state) == {"10.250.0.9/24", "fd00:a57a::5/64"}
    assert "UP" in state["flags"]
    peer = show(host, "astara-mgt-p")  # no peer_namespace: beside it, up
    assert peer is not None and "UP" in peer["flags"]


def test_a_named_interface_is_configured_and_its_other_addresses_kept(
    netns: Callable[[], str],
) -> None:
    host = netns()
    # A NIC on the management network (no dummy driver in every kernel: one end of a pair).
    ip("-n", host, "link", "add", "eth-mgt", "type", "veth", "peer", "name", "eth-mgt-wire")
    ip("-n", host, "addr", "add", "192.0.2.10/24", "dev", "eth-mgt")  # the host's own
    ip("-n", host, "addr", "add", "10.250.0.77/24", "dev", "eth-mgt")  # an earlier port's
    plug = LinuxPlug(ServicePortOptions(driver="linux", interface="eth-mgt"), netns=host)

    plug.plug(PORT)
    state = show(host, "eth-mgt")
    assert state is not None
    assert state["address"] == MAC and "UP" in state["flags"] and state["mtu"] == 1400
    assert addresses(state) == {"192.0.2.10/24", "10.250.0.5/24", "fd00:a57a::5/64"}

    plug.unplug(PORT)  # the port's addresses go, the interface and the host's address stay
    state = show(host, "eth-mgt")
    assert state is not None and addresses(state) == {"192.0.2.10/24"}


def test_a_missing_named_interface_is_a_clear_error(netns: Callable[[], str]) -> None:
    plug = LinuxPlug(ServicePortOptions(driver="linux", interface="eth-none"), netns=netns())
    with pytest.raises(PlugError, match="interface eth-none does not exist .*set peer"):
        plug.plug(PORT)


def test_an_interface_that_is_not_a_veth_is_not_taken_for_ours(netns: Callable[[], str]) -> None:
    host = netns()
    ip("-n", host, "link", "add", "astara-mgt", "type", "bridge")
    plug = LinuxPlug(
        ServicePortOptions(driver="linux", interface="astara-mgt", peer="astara-mgt-p"),
        netns=host,
    )
    with pytest.raises(PlugError, match="astara-mgt exists and is not a veth"):
        plug.plug(PORT)
    plug_state = show(host, "astara-mgt")
    assert plug_state is not None and plug_state["address"] != MAC  # left as it was


def test_a_missing_bridge_names_the_interface_and_ips_complaint(netns: Callable[[], str]) -> None:
    host = netns()
    options = ServicePortOptions(
        driver="linux", interface="astara-mgt", peer="astara-mgt-p", bridge="br-none"
    )
    with pytest.raises(PlugError) as err:
        LinuxPlug(options, netns=host).plug(PORT)
    message = str(err.value)
    assert "interface astara-mgt-p" in message and "master br-none" in message
    assert "failed:" in message and "\n" not in message


def test_the_port_from_the_cloud_plugged_end_to_end(netns: Callable[[], str]) -> None:
    cloud = MemoryCloud()
    net, subnet = cloud.add_network("mgt-v4", cidr="10.251.0.0/24", gateway_ip=None, mtu=1450)
    port = ensure_service_port(
        cloud.network, host="orch-1", management_network_id=net, management_subnet_id=subnet
    )
    host = netns()
    plug = LinuxPlug(
        ServicePortOptions(driver="linux", interface="astara-mgt", peer="astara-mgt-p"),
        netns=host,
    )
    plug.plug(port)
    state = show(host, "astara-mgt")
    assert state is not None
    assert state["address"] == cloud.ports[port.id]["mac_address"]
    assert addresses(state) == {f"{cloud.ports[port.id]['fixed_ips'][0]['ip_address']}/24"}
    assert state["mtu"] == 1450
