"""An SSH server per simulated appliance (paramiko), for ``astara-ctl ssh``.

Each ACTIVE server with an appliance agent also gets an SSH listener on its management address
(``[sim] ssh_port``, 0 = off). The user is ``astara``; the accepted key is the one the
orchestrator put in the server's cloud-config user data, as in a real appliance. A few commands
answer like the appliance would (``hostname``, ``ip -br addr``, ``cat /etc/hostname``); others
say they are not found. One thread accepts for every listener; each session runs in paramiko's.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import selectors
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paramiko

__all__ = ["SshServer"]

LOG = logging.getLogger(__name__)
USER = "astara"
_KEY_LINE = re.compile(r"^\s*-?\s*(ssh-[a-z0-9-]+|ecdsa-[a-z0-9-]+)\s+([A-Za-z0-9+/=]+)", re.M)


def authorized_keys(user_data: str | None) -> list[paramiko.PKey]:
    """The public keys in a cloud-config (base64-encoded or plain), as paramiko keys."""
    if not user_data:
        return []
    text = user_data
    try:
        text = base64.b64decode(user_data, validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        pass
    keys = []
    for kind, blob in _KEY_LINE.findall(text):
        try:
            keys.append(paramiko.PKey.from_type_string(kind, base64.b64decode(blob)))
        except (ValueError, paramiko.SSHException):
            LOG.debug("ignored an unreadable %s key", kind)
    return keys


class _Session(paramiko.ServerInterface):
    def __init__(self, keys: list[paramiko.PKey], run: Callable[[str], tuple[int, str]]) -> None:
        self.keys, self.run = keys, run
        self.done = threading.Event()

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        if username == USER and any(key == k for k in self.keys):
            return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return (
            paramiko.OPEN_SUCCEEDED
            if kind == "session"
            else paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
        )

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        # Answer after the request is acknowledged (paramiko does that when this returns).
        threading.Thread(target=self._exec, args=(channel, command), daemon=True).start()
        return True

    def _exec(self, channel: paramiko.Channel, command: bytes) -> None:
        status, out = self.run(command.decode("utf-8", "replace").strip())
        try:
            channel.sendall(out.encode())
            channel.send_exit_status(status)
            # EOF, then let the client close: closing first could beat the request's
            # acknowledgement.
            channel.shutdown_write()
            channel.settimeout(10)
            while channel.recv(1024):
                pass
        except (OSError, EOFError, paramiko.SSHException):
            pass  # the client went away (it may close as soon as it has the exit status)
        channel.close()

    def check_channel_pty_request(self, *args: Any) -> bool:
        return True

    def check_channel_shell_request(self, channel: paramiko.Channel) -> bool:
        threading.Thread(target=self._shell, args=(channel,), daemon=True).start()
        return True

    def _shell(self, channel: paramiko.Channel) -> None:
        try:
            self._converse(channel)
        except (OSError, EOFError, paramiko.SSHException):
            pass  # the client went away
        channel.close()

    def _converse(self, channel: paramiko.Channel) -> None:
        channel.sendall(b"astara appliance (simulated)\r\n$ ")
        line = b""
        while True:
            data = channel.recv(1024)
            if not data:
                break
            for byte in data:
                if byte in (13, 10):
                    command = line.decode("utf-8", "replace").strip()
                    line = b""
                    if command in ("exit", "logout"):
                        channel.send_exit_status(0)
                        return
                    _status, out = self.run(command) if command else (0, "")
                    channel.sendall(b"\r\n" + out.replace("\n", "\r\n").encode() + b"$ ")
                else:
                    line += bytes([byte])
                    channel.sendall(bytes([byte]))


def _host_key(path: Path) -> paramiko.ECDSAKey:
    """The key kept at ``path``, made (owner-only) the first time."""
    if path.exists():
        return paramiko.ECDSAKey.from_private_key_file(str(path))
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = paramiko.ECDSAKey.generate()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        key.write_private_key(f)
    return key


class SshServer:
    """SSH listeners on the appliances' management addresses, served by one accept thread."""

    def __init__(self, port: int, ssh_dir: str | os.PathLike[str] = "") -> None:
        self.port = port
        # With ssh_dir, one host key kept there (stable across runs, as a real appliance
        # image's) and a known_hosts file naming it for every listener: what an operator would
        # have copied from the VMs' console logs. Without, a new key per run.
        self._known_hosts = Path(ssh_dir) / "known_hosts" if ssh_dir else None
        self.host_key = (
            _host_key(Path(ssh_dir) / "sim_host_key") if ssh_dir else (paramiko.ECDSAKey.generate())
        )
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._listeners: dict[str, socket.socket] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="sim-ssh", daemon=True)

    def start(self) -> SshServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            for server_id in list(self._listeners):
                self._close(server_id)
        self._thread.join(timeout=5)

    def add(
        self,
        server_id: str,
        address: str,
        keys: list[paramiko.PKey],
        run: Callable[[str], tuple[int, str]],
    ) -> None:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, self.port))
        sock.listen(16)
        sock.setblocking(False)
        with self._lock:
            self._close(server_id)
            self._listeners[server_id] = sock
            self._selector.register(sock, selectors.EVENT_READ, (keys, run))
            self._make_known(address)

    def _make_known(self, address: str) -> None:
        """Name our host key for ``address`` in the known_hosts file (once)."""
        if self._known_hosts is None:
            return
        host = address if self.port == 22 else f"[{address}]:{self.port}"
        line = f"{host} {self.host_key.get_name()} {self.host_key.get_base64()}\n"
        try:
            known = self._known_hosts.read_text() if self._known_hosts.exists() else ""
            if line in known:
                return
            fd = os.open(self._known_hosts, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a") as f:
                f.write(line)
        except OSError as exc:
            LOG.warning("could not add %s to %s: %s", host, self._known_hosts, exc.strerror)

    def remove(self, server_id: str) -> None:
        with self._lock:
            self._close(server_id)

    def _close(self, server_id: str) -> None:
        sock = self._listeners.pop(server_id, None)
        if sock is not None:
            self._selector.unregister(sock)
            sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                empty = not self._listeners
            if empty:
                self._stop.wait(0.1)
                continue
            for key, _mask in self._selector.select(timeout=0.1):
                try:
                    conn, _peer = key.fileobj.accept()  # type: ignore[union-attr]
                except OSError:
                    continue
                keys, run = key.data
                conn.setblocking(True)
                transport = paramiko.Transport(conn)
                transport.add_server_key(self.host_key)
                try:
                    transport.start_server(server=_Session(keys, run))
                except (paramiko.SSHException, OSError, EOFError) as exc:
                    LOG.info("ssh session failed: %s", exc)
