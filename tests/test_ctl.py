"""astara-ctl as an operator runs it: a subprocess against an orchestrator on the embedded bus.

The far end is ``astara_actors.testing.peer`` (an orchestrator on an in-memory cloud); the
service VM behind ``ssh`` is a small paramiko server on the router's management address.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest

from astara_actors.ctl.ssh import choose_vm
from astara_actors.testing import WAIT, wait_for
from astara_actors.testing.peer import CtlPeer, ctl_config

ROOT = Path(__file__).resolve().parent.parent
UNKNOWN = "11111111-2222-3333-4444-555555555555"
pytestmark = pytest.mark.services  # astara-ctl runs in a process of its own, as operators run it


def ctl(config: Path | None, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """``python -m astara_actors.ctl.cli`` with ``args``; never a traceback, whatever happens."""
    head = ["--config-file", str(config)] if config else []
    done = subprocess.run(
        [sys.executable, "-m", "astara_actors.ctl.cli", *head, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=WAIT + 15,
        input=stdin,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CtlPeer]:
    orchestrator = CtlPeer(tmp_path_factory.mktemp("ctl"))
    yield orchestrator
    orchestrator.stop()


# --- usage and validation: nothing is sent


def test_help_is_the_usage_string() -> None:
    done = ctl(None, "--help")
    assert done.returncode == 0
    assert done.stdout.startswith("astara-ctl: instruct")
    assert "astara-ctl [options] router rebuild <router-id>" in done.stdout


@pytest.mark.parametrize(
    "args",
    [
        ("router", "frobnicate", UNKNOWN),
        ("router", "update", UNKNOWN, "--image=abc"),  # only rebuild takes an image
        ("poll", "--reason=x"),
        ("--timeout",),
    ],
)
def test_arguments_matching_no_usage_show_the_usage_and_exit_2(args: tuple[str, ...]) -> None:
    done = ctl(None, *args)
    assert done.returncode == 2
    assert done.stderr.startswith("Usage:\n  astara-ctl [options] browse")
    assert done.stderr.endswith(
        "astara-ctl: the arguments match no usage above (see astara-ctl --help)\n"
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (("router", "debug", "not-a-uuid"), "router_id 'not-a-uuid' is not a UUID"),
        (("router", "debug", "*"), "cannot be the wildcard '*'"),
        (("router", "manage", "error"), "cannot be the wildcard 'error'"),
        (("resource", "debug", "1234"), "resource_id '1234' is not a UUID"),
        (
            ("tenant", "debug", "tenant-0"),
            "tenant_id 'tenant-0' is not a UUID or a Keystone project id",
        ),
        (("tenant", "debug", "../../etc/passwd"), "tenant_id '../../etc/passwd' is not a UUID or"),
        (("router", "show", "nope"), "router_id 'nope' is not a UUID"),
        (("ssh", "nope"), "router_id 'nope' is not a UUID"),
        # A reason is one line of at most 255 characters (issue 13, item 8).
        (
            ("router", "debug", UNKNOWN, "--reason=ok\nERROR astara: CIRCUIT BREAKER OPEN: forged"),
            "router-debug: reason contains a control character (\\n at position 2)",
        ),
        (
            ("tenant", "debug", UNKNOWN, "--reason=\x1b[2J"),
            "control character (\\x1b at position 0)",
        ),
        (
            ("global", "debug", "enable", "--reason=" + "x" * 3000),
            "global-debug: reason is 3000 characters long; at most 255 are allowed",
        ),
        (("resource", "rebuild", UNKNOWN, "--image=../x"), "'../x' is not an image id"),
    ],
)
def test_a_malformed_argument_is_one_line_and_exit_2_before_anything_is_sent(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    # No orchestrator listens here: a command that got as far as the bus would time out.
    done = ctl(ctl_config(tmp_path), "--timeout=0.2", *args)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr


def test_a_bad_timeout_is_one_line_and_exit_2(tmp_path: Path) -> None:
    done = ctl(ctl_config(tmp_path), "--timeout=soon", "poll")
    assert done.returncode == 2
    assert done.stderr == (
        "astara-ctl: --timeout must be a number of seconds between 0 and 3600, not 'soon'\n"
    )


def test_a_missing_config_file_says_which_and_exits_2(tmp_path: Path) -> None:
    done = ctl(tmp_path / "absent.ini", "poll")
    assert done.returncode == 2
    assert "absent.ini: cannot read the config file" in done.stderr
    assert "--config-file" in done.stderr


# --- nobody there


def test_no_orchestrator_answering_within_the_timeout_exits_2(tmp_path: Path) -> None:
    config = ctl_config(tmp_path)
    for args in (
        ("poll",),
        ("router", "show", UNKNOWN),
        ("workers", "debug"),
        ("browse", "--dump"),
    ):
        done = ctl(config, "--timeout=0.3", *args)
        assert done.returncode == 2, args
        assert "no orchestrator answered within 0.3 s" in done.stderr


def test_an_unusable_embedded_bus_exits_2(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    config = ctl_config(tmp_path, f"[bus]\ntransport_url = filesystem://{blocker}/bus\n")
    done = ctl(config, "poll")
    assert done.returncode == 2
    assert "cannot create the bus folders" in done.stderr


def test_an_unreachable_broker_exits_2(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"rabbit://guest:secret@127.0.0.1:{port}//"
    done = ctl(ctl_config(tmp_path, f"[bus]\ntransport_url = {url}\n"), "--timeout=1", "poll")
    assert done.returncode == 2
    assert "is unavailable" in done.stderr and "secret" not in done.stderr


# --- against a running orchestrator


def test_router_commands_name_what_was_sent_and_take_effect(peer: CtlPeer) -> None:
    router = peer.routers[0]
    done = ctl(peer.config, "router", "debug", router, "--reason=look closer")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"sent router-debug for {router} (reason: look closer) to peer-ctl\n"
    peer.wait_acted("look closer")
    shown = ctl(peer.config, "router", "show", router)
    assert "debug          yes (router: look closer)" in shown.stdout
    for verb in ("update", "rebuild", "manage"):
        done = ctl(peer.config, "router", verb, router)
        assert done.returncode == 0 and f"sent router-{verb} for {router}" in done.stdout


def test_router_rebuild_with_json_returns_the_payload_sent(peer: CtlPeer) -> None:
    router = peer.routers[1]
    done = ctl(peer.config, "--json", "router", "rebuild", router, "--image=img-2", "--reason=r")
    assert done.returncode == 0, done.stderr
    sent = json.loads(done.stdout)
    assert sent["orchestrators"] == ["peer-ctl"]
    # The peer's in-memory tenants ("tenant-1") are no Keystone project ids: rather than a
    # tenant the orchestrators would refuse, "*" goes out and the router's owner finds it.
    assert sent["sent"] == {
        "command": "router-rebuild",
        "router_id": router,
        "tenant_id": "*",
        "reason": "r",
        "router_image_uuid": "img-2",
    }


def test_the_wildcards_go_out_for_update_and_rebuild(peer: CtlPeer) -> None:
    done = ctl(peer.config, "--json", "resource", "update", "error")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["sent"] == {
        "command": "resource-update",
        "resource_id": "error",
        "tenant_id": "error",
        "reason": "",
    }
    done = ctl(peer.config, "router", "rebuild", "*")
    assert done.returncode == 0 and "sent router-rebuild for * to peer-ctl" in done.stdout


def test_an_unknown_router_is_a_clear_message_and_exit_1(peer: CtlPeer) -> None:
    for args in (
        ("router", "rebuild", UNKNOWN),
        ("router", "show", UNKNOWN),
        ("resource", "debug", UNKNOWN),
        ("ssh", UNKNOWN, "uname"),
    ):
        done = ctl(peer.config, *args)
        assert done.returncode == 1, args
        assert done.stderr.strip() == (
            f"astara-ctl: router {UNKNOWN} is not known to any orchestrator (asked: peer-ctl)"
        )


def test_resource_commands_carry_resource_keys(peer: CtlPeer) -> None:
    router = peer.routers[2]
    done = ctl(peer.config, "--json", "resource", "debug", router.upper(), "--reason=res")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["sent"] == {
        "command": "resource-debug",
        "resource_id": router,
        "tenant_id": "*",
        "reason": "res",
    }
    peer.wait_acted("res")
    assert ctl(peer.config, "resource", "manage", router).returncode == 0


@pytest.mark.parametrize(
    "args, sent",
    [
        (("poll",), "sent poll to peer-ctl"),
        (("config", "reload"), "sent config-reload to peer-ctl"),
        (
            ("global", "debug", "enable", "--reason=upgrade"),
            "sent global-debug enable (reason: upgrade) to peer-ctl",
        ),
        (("global", "debug", "disable"), "sent global-debug disable to peer-ctl"),
        (
            ("tenant", "debug", UNKNOWN, "--reason=t"),
            f"sent tenant-debug for {UNKNOWN} (reason: t) to peer-ctl",
        ),
        (("tenant", "manage", UNKNOWN), f"sent tenant-manage for {UNKNOWN} to peer-ctl"),
    ],
)
def test_broadcast_commands_say_what_was_sent(
    peer: CtlPeer, args: tuple[str, ...], sent: str
) -> None:
    done = ctl(peer.config, *args)
    assert done.returncode == 0, done.stderr
    assert sent in done.stdout


def test_a_tenant_command_says_when_no_router_of_the_tenant_is_driven(peer: CtlPeer) -> None:
    done = ctl(peer.config, "tenant", "debug", UNKNOWN, "--reason=t")
    assert done.returncode == 0, done.stderr
    assert (
        f"astara-ctl: no orchestrator drives a router of tenant {UNKNOWN}: nothing changed now"
        in done.stderr
    )
    assert f"astara-ctl tenant manage {UNKNOWN} clears it" in done.stderr


def test_a_project_id_typed_with_or_without_hyphens_finds_its_tenant() -> None:
    from astara_actors.ctl.cli import as_known_tenant

    hexed = "2f1f231e7cbe4028a87c725e401565c9"
    dashed = "2f1f231e-7cbe-4028-a87c-725e401565c9"
    assert as_known_tenant(dashed, {hexed}) == hexed
    assert as_known_tenant(hexed, {dashed}) == dashed
    assert as_known_tenant(hexed, {hexed}) == hexed
    assert as_known_tenant(dashed, set()) == dashed, "unknown in both forms: left as typed"
    assert as_known_tenant("*", {hexed}) == "*"


def test_router_show_prints_the_actor_dump(peer: CtlPeer) -> None:
    router = peer.routers[1]
    done = ctl(peer.config, "router", "show", router)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"router         {router}  (on peer-ctl)" in out
    for label in (
        "state ",
        "instance ",
        "inbox ",
        "boot attempts ",
        "steps retried ",
        "backoff",
        "debug ",
        "restarts ",
        "VMs (1)",
        "transitions (last",
    ):
        assert label in out, label
    assert "127.100." in out and "CreateInstance → CheckBoot" in out
    dump = json.loads(ctl(peer.config, "--json", "router", "show", router).stdout)
    assert dump["host"] == "peer-ctl" and dump["router"]["router_id"] == router


def test_an_orchestrator_without_a_store_says_it_keeps_no_audit_trail(peer: CtlPeer) -> None:
    # The peer runs without a store: router show says so, and audit names who could not answer
    shown = ctl(peer.config, "router", "show", peer.routers[0])
    assert shown.returncode == 0, shown.stderr
    assert "recent commands  not recorded (its orchestrator keeps no store)" in shown.stdout
    done = ctl(peer.config, "audit")
    assert done.returncode == 1
    assert done.stderr == (
        "astara-ctl: the orchestrators could not answer: peer-ctl: this orchestrator keeps no "
        "audit trail (it runs without a store)\n"
    )


def test_workers_debug_prints_and_returns_the_tree(peer: CtlPeer) -> None:
    done = ctl(peer.config, "workers", "debug")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("orchestrator peer-ctl: ")
    for router in peer.routers:
        assert f"    router {router}  " in done.stdout
    assert "    consumer  " in done.stdout and "consumer alive: yes" in done.stdout
    tree = json.loads(ctl(peer.config, "--json", "workers", "debug").stdout)["workers"]["peer-ctl"]
    assert tree["router_count"] == len(peer.routers)
    assert tree["inbox"]["messages"]["queries"] >= 1


def test_browse_dump_prints_one_plain_snapshot(peer: CtlPeer) -> None:
    done = ctl(peer.config, "browse", "--dump")
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"astara-ctl browse  {len(peer.routers)} routers on peer-ctl")
    assert lines[2].startswith("ROUTER ")
    assert sorted(line.split()[0] for line in lines[3:]) == sorted(peer.routers)
    data = json.loads(ctl(peer.config, "--json", "browse", "--dump").stdout)
    assert {r["router_id"] for r in data["routers"]} == set(peer.routers)


# --- ssh to the service VM


class ServiceVM(paramiko.ServerInterface):
    """A service VM's sshd: public-key auth for ``astara``; exec answered from a table."""

    COMMANDS = {
        "uname -a": (b"Linux astara-appliance\n", b"", 0),
        "ip -4 addr": (b"inet 192.168.0.1/24\n", b"", 0),
        "false": (b"", b"it failed\n", 3),
    }

    def __init__(self, authorized: paramiko.PKey, ptys: list[tuple[str, int, int]]) -> None:
        self.authorized = authorized
        self.ptys = ptys

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        ok = username == "astara" and key == self.authorized
        return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        out, err, status = self.COMMANDS.get(command.decode(), (b"", b"unknown command\n", 127))
        threading.Thread(target=self._answer, args=(channel, out, err, status)).start()
        return True

    def check_channel_shell_request(self, channel: paramiko.Channel) -> bool:
        threading.Thread(target=self._shell, args=(channel,)).start()
        return True

    def check_channel_pty_request(
        self, channel: paramiko.Channel, term: bytes, width: int, height: int, *_: Any
    ) -> bool:
        self.ptys.append((term.decode(), width, height))
        return True

    @staticmethod
    def _answer(channel: paramiko.Channel, out: bytes, err: bytes, status: int) -> None:
        channel.sendall(out)
        channel.sendall_stderr(err)
        channel.send_exit_status(status)
        # As the simulator does; the close may overtake the exec request's acknowledgement.
        channel.close()

    @staticmethod
    def _shell(channel: paramiko.Channel) -> None:
        channel.sendall(b"welcome\n")
        while (data := channel.recv(1024)) and data.strip() != b"exit":
            channel.sendall(b"echo: " + data)
        channel.send_exit_status(0)
        channel.shutdown_write()


class SshServer:
    """Listens on ``address`` (a router's management address), one thread per connection."""

    def __init__(self, address: str, authorized: paramiko.PKey) -> None:
        self.host_key = paramiko.ECDSAKey.generate()
        self.authorized = authorized
        self.sock = socket.socket()
        self.sock.bind((address, 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.transports: list[paramiko.Transport] = []
        self.ptys: list[tuple[str, int, int]] = []  # (TERM, columns, lines) of each pty asked
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            transport = paramiko.Transport(conn)
            transport.add_server_key(self.host_key)
            self.transports.append(transport)
            threading.Thread(target=self._serve, args=(transport,), daemon=True).start()

    def _serve(self, transport: paramiko.Transport) -> None:
        try:
            transport.start_server(server=ServiceVM(self.authorized, self.ptys))
        except (paramiko.SSHException, OSError, EOFError):
            pass  # the client hung up during the handshake: refusing our host key does that

    def close(self) -> None:
        self.sock.close()
        for transport in self.transports:
            transport.close()


@pytest.fixture
def vm(peer: CtlPeer, tmp_path: Path) -> Iterator[tuple[SshServer, Path, str, str]]:
    """The ssh server on router 0's VM, the client key file, the router and "<vm> (<address>)"."""
    router = peer.routers[0]
    dump = json.loads(ctl(peer.config, "--json", "router", "show", router).stdout)["router"]
    name, address, _note = choose_vm(dump, 0)
    key = paramiko.ECDSAKey.generate()
    key_file = tmp_path / "id_ecdsa"
    key.write_private_key_file(str(key_file))
    server = SshServer(address, key)
    yield server, key_file, router, f"{name} ({address})"
    server.close()


def ssh(
    peer: CtlPeer, server: SshServer, key_file: Path, *args: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    known = key_file.parent / "known_hosts"
    return ctl(
        peer.config,
        "ssh",
        f"--port={server.port}",
        f"--key={key_file}",
        f"--known-hosts={known}",
        *args,
        stdin=stdin,
    )


def test_ssh_refuses_an_unknown_host_key_and_shows_its_fingerprint(
    peer: CtlPeer, vm: tuple[SshServer, Path, str, str]
) -> None:
    server, key_file, router, _vm_name = vm
    address = server.sock.getsockname()[0]
    done = ssh(peer, server, key_file, router, "uname -a")
    assert done.returncode == 255
    assert server.host_key.fingerprint in done.stderr
    assert f"[{address}]:{server.port}" in done.stderr and "--accept-new-host-key" in done.stderr
    assert not (key_file.parent / "known_hosts").exists()


def test_ssh_runs_a_command_once_the_host_key_is_accepted(
    peer: CtlPeer, vm: tuple[SshServer, Path, str, str]
) -> None:
    server, key_file, router, vm_name = vm
    address = server.sock.getsockname()[0]
    done = ssh(peer, server, key_file, "--accept-new-host-key", router, "uname", "-a")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Linux astara-appliance\n"
    assert f"connecting to {vm_name}" in done.stderr
    known = (key_file.parent / "known_hosts").read_text()
    assert known.startswith(f"[{address}]:{server.port} ecdsa-sha2-nistp256 ")
    # Now known: no flag needed; as with ssh(1), the words after the router id are the command's.
    done = ssh(peer, server, key_file, router, "ip", "-4", "addr")
    assert done.returncode == 0 and done.stdout == "inet 192.168.0.1/24\n"
    done = ssh(peer, server, key_file, router, "ls", "-h")
    assert done.returncode == 127 and done.stderr.endswith("unknown command\n")


def test_ssh_exits_with_the_remote_status_and_passes_stderr(
    peer: CtlPeer, vm: tuple[SshServer, Path, str, str]
) -> None:
    server, key_file, router, _vm_name = vm
    done = ssh(peer, server, key_file, "--accept-new-host-key", router, "false")
    assert done.returncode == 3
    assert done.stderr.endswith("it failed\n")


def test_ssh_refuses_a_changed_host_key(
    peer: CtlPeer, vm: tuple[SshServer, Path, str, str]
) -> None:
    server, key_file, router, _vm_name = vm
    address = server.sock.getsockname()[0]
    old = paramiko.ECDSAKey.generate()
    (key_file.parent / "known_hosts").write_text(
        f"[{address}]:{server.port} {old.get_name()} {old.get_base64()}\n"
    )
    done = ssh(peer, server, key_file, "--accept-new-host-key", router, "uname -a")
    assert done.returncode == 255
    assert "has CHANGED" in done.stderr and "ssh-keygen -R" in done.stderr
    assert old.fingerprint in done.stderr and server.host_key.fingerprint in done.stderr


def test_ssh_with_a_key_the_vm_does_not_know_fails_to_authenticate(
    peer: CtlPeer, vm: tuple[SshServer, Path, str, str]
) -> None:
    server, key_file, router, _vm_name = vm
    paramiko.ECDSAKey.generate().write_private_key_file(str(key_file))
    done = ssh(peer, server, key_file, "--accept-new-host-key", router, "uname -a")
    assert done.returncode == 255
    assert "astara@" in done.stderr and "authentication failed" in done.stderr


def test_ssh_without_a_command_opens_a_shell(
    peer: CtlPeer, vm: tuple[SshServer, Path, str, str]
) -> None:
    server, key_file, router, _vm_name = vm
    done = ssh(peer, server, key_file, "--accept-new-host-key", router, stdin="hello\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "welcome\necho: hello\n"


def test_ssh_with_the_demo_config_finds_the_simulators_port_and_the_demo_key(
    peer: CtlPeer, vm: tuple[SshServer, Path, str, str], tmp_path: Path
) -> None:
    server, key_file, router, _vm_name = vm
    ssh_dir = peer.config.parent / "ssh"  # <state_dir>/ssh, where the demo keeps its key pair
    ssh_dir.mkdir()
    try:
        shutil.copy(key_file, ssh_dir / "id_ecdsa")
        demo = tmp_path / "demo.ini"
        demo.write_text(peer.config.read_text() + f"[sim]\nssh_port = {server.port}\n")
        done = ctl(demo, "ssh", "--accept-new-host-key", router, "uname -a")
        assert done.returncode == 0, done.stderr
        assert done.stdout == "Linux astara-appliance\n"
        address = server.sock.getsockname()[0]
        known = (ssh_dir / "known_hosts").read_text()
        assert known.startswith(f"[{address}]:{server.port} ")
    finally:
        shutil.rmtree(ssh_dir)


def test_ssh_reaches_a_simulated_appliance_of_the_demo(tmp_path: Path) -> None:
    """The real thing: astara-orchestrator with astara-sim, the demo's key and ssh port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = ctl_config(
        tmp_path,
        "host = demo\nboot_check_interval = 0.1\n"
        "[api]\nenabled = false\n[sim]\nport = 0\ntenants = 1\n"
        f"routers_per_tenant = 1\nboot_delay = 0.1\nssh_port = {port}\n",
    )
    daemon = subprocess.Popen(
        [sys.executable, "-m", "astara_actors.daemon", "--config-file", str(config)],
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert daemon.stderr is not None
    try:
        for line in daemon.stderr:  # its log says when it is up
            if "astara-orchestrator demo started" in line:
                break
        threading.Thread(target=daemon.stderr.read, daemon=True).start()  # keep the pipe drained

        def configured() -> list[str]:
            listed = ctl(config, "--json", "browse", "--dump")
            if listed.returncode != 0:
                return []
            return [
                r["router_id"]
                for r in json.loads(listed.stdout)["routers"]
                if r["instance_state"] == "configured"
            ]

        # each try is a round trip: no pause between them
        routers = wait_for(configured, "the demo router configured", interval=0)
        assert routers, "the demo router never came up"
        # Exactly as the README shows it: the demo's known_hosts already names the appliances'
        # host key (the simulator keeps one under <state_dir>/ssh), so the first try works.
        done = ctl(config, "ssh", routers[0], "hostname")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip()
        assert "trusted" not in done.stderr
        assert (tmp_path / "ssh" / "known_hosts").exists()  # the demo's, not ~/.ssh's
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=WAIT)


def test_ssh_in_a_terminal_passes_a_pty_through(
    peer: CtlPeer, vm: tuple[SshServer, Path, str, str], tmp_path: Path
) -> None:
    server, key_file, router, _vm_name = vm
    main, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "astara_actors.ctl.cli",
            "--config-file",
            str(peer.config),
            "ssh",
            f"--port={server.port}",
            f"--key={key_file}",
            "--accept-new-host-key",
            f"--known-hosts={tmp_path / 'known_hosts'}",
            router,
        ],
        stdin=terminal,
        stdout=terminal,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "TERM": "xterm-256color"},
    )
    os.close(terminal)
    try:
        read_until(main, b"welcome")
        os.write(main, b"hello\r")  # raw mode: no local echo, the keys go to the VM as typed
        read_until(main, b"echo: hello")
        os.write(main, b"exit\r")
        assert proc.wait(timeout=WAIT) == 0
    finally:
        proc.kill()
        os.close(main)
    assert server.ptys == [("xterm-256color", 100, 30)]


def read_until(fd: int, expected: bytes) -> bytes:
    """What arrives on ``fd`` until ``expected`` is among it."""
    seen = b""
    while expected not in seen:
        ready, _, _ = select.select([fd], [], [], WAIT)
        assert ready, f"nothing more after {seen!r}"
        seen += os.read(fd, 1024)
    return seen


def test_ssh_to_an_ha_router_says_which_vm() -> None:
    dump = {
        "router_id": "r1",
        "instance": {
            "vms": [
                {"name": "ak-r1_0", "management_address": "fdca::1"},
                {"name": "ak-r1_1", "management_address": "fdca::2"},
            ]
        },
    }
    name, address, note = choose_vm(dump, 1)
    assert (name, address) == ("ak-r1_1", "fdca::2")
    assert note == (
        "router r1 is HA with 2 VMs: [0] ak-r1_0 fdca::1, [1] ak-r1_1 fdca::2; "
        "connecting to ak-r1_1 (fdca::2) (see --vm)"
    )


def test_ssh_to_a_router_without_a_vm_says_so() -> None:
    from astara_actors.ctl.session import CtlError

    with pytest.raises(CtlError, match="no service VM with a management address"):
        choose_vm({"router_id": "r1", "instance_state": "down", "instance": {"vms": []}}, 0)


def test_output_piped_into_a_reader_that_leaves_early_is_not_a_traceback(peer: CtlPeer) -> None:
    # The reader closes the pipe at once, before astara-ctl writes its first line.
    done = subprocess.run(
        f"{sys.executable} -m astara_actors.ctl.cli --config-file {peer.config} workers debug"
        " | true",
        shell=True,
        capture_output=True,
        text=True,
        timeout=WAIT + 15,
        cwd=ROOT,
    )
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr


def test_a_router_command_carries_its_tenant_only_when_it_is_a_project_id() -> None:
    from astara_actors.ctl.session import tenant_hint

    project = "2f1f231e7cbe4028a87c725e401565c9"
    assert tenant_hint({"tenant_id": project}) == project
    for odd in ("tenant-1", "../../etc/passwd", "", None, 7):
        assert tenant_hint({"tenant_id": odd}) == "*"
    assert tenant_hint({}) == "*"
