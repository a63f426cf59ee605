"""``astara-ctl ssh``: a command or a shell on a router's service VM, over paramiko.

The VM is found in the owning orchestrator's dump of the router (its management address).
Host keys are checked against a known_hosts file; a key seen for the first time is refused
(showing its fingerprint) unless the operator accepts it, and a changed key is always refused.
"""

from __future__ import annotations

import os
import select
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import paramiko

from astara_actors.ctl.session import EXIT_USAGE, CtlError

__all__ = ["EXIT_SSH", "SshError", "SshOptions", "choose_vm", "run"]

EXIT_SSH = 255  # as OpenSSH: the connection failed (the remote command's status otherwise)


class SshError(CtlError):
    """Raised when the service VM cannot be reached, trusted or logged into."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_SSH)


@dataclass(frozen=True, slots=True)
class SshOptions:
    vm: int = 0
    user: str = "astara"
    port: int = 22
    key: str | None = None
    known_hosts: Path = Path("~/.ssh/known_hosts")
    accept_new_host_key: bool = False
    timeout: float = 10.0

    @classmethod
    def defaults(cls, config: Any) -> SshOptions:
        """With the demo's embedded simulator (a :class:`~astara_actors.config.loader.Config`): its
        appliances' ssh port, the demo's key, and host keys kept under ``state_dir``, not in
        ``~/.ssh`` (the simulator makes new host keys on every run)."""
        if not config.process.embedded_sim:
            return cls()
        ssh_dir = Path(config.process.state_dir) / "ssh"
        key = ssh_dir / "id_ecdsa"
        return cls(
            port=getattr(config.sim, "ssh_port", 0) or 22,
            key=str(key) if key.exists() else None,
            known_hosts=ssh_dir / "known_hosts",
        )

    @classmethod
    def from_args(cls, args: Mapping[str, Any], defaults: SshOptions | None = None) -> SshOptions:
        """The options of ``astara-ctl ssh`` (docopt's dict); :class:`CtlError` if malformed."""
        base = defaults or cls()
        try:
            vm = int(args["--vm"])
            port = int(args["--port"]) if args["--port"] else base.port
        except ValueError:
            raise CtlError("--vm and --port must be whole numbers", EXIT_USAGE) from None
        if vm < 0 or not 0 < port < 65536:
            raise CtlError("--vm must be 0 or more and --port between 1 and 65535", EXIT_USAGE)
        known = Path(args["--known-hosts"]) if args["--known-hosts"] else base.known_hosts
        return cls(
            vm=vm,
            user=args["--user"],
            port=port,
            key=args["--key"] or base.key,
            known_hosts=known.expanduser(),
            accept_new_host_key=bool(args["--accept-new-host-key"]),
        )


def choose_vm(dump: Mapping[str, Any], index: int) -> tuple[str, str, str]:
    """``(vm name, management address, what to tell the operator)`` for VM ``index``."""
    router_id = dump.get("router_id", "")
    vms = [
        vm for vm in (dump.get("instance") or {}).get("vms") or [] if vm.get("management_address")
    ]
    if not vms:
        raise CtlError(
            f"router {router_id} has no service VM with a management address "
            f"(instance state: {dump.get('instance_state', '?')})"
        )
    if index >= len(vms):
        raise CtlError(
            f"router {router_id} has {len(vms)} VM(s); --vm must be below {len(vms)}", EXIT_USAGE
        )
    vm = vms[index]
    name, address = str(vm.get("name", "")), str(vm["management_address"])
    note = f"connecting to {name} ({address})"
    if len(vms) > 1:
        others = ", ".join(
            f"[{i}] {v.get('name', '')} {v['management_address']}" for i, v in enumerate(vms)
        )
        note = f"router {router_id} is HA with {len(vms)} VMs: {others}; {note} (see --vm)"
    return name, address, note


def run(
    dump: Mapping[str, Any],
    options: SshOptions,
    command: str,
    *,
    stdin: IO[bytes] | None = None,
    stdout: IO[bytes] | None = None,
    stderr: IO[bytes] | None = None,
) -> int:
    """Run ``command`` (or a shell when empty) on the router's VM; returns its exit status."""
    stdin = stdin or sys.stdin.buffer
    stdout = stdout or sys.stdout.buffer
    stderr = stderr or sys.stderr.buffer
    name, address, note = choose_vm(dump, options.vm)
    stderr.write(f"astara-ctl: {note}\n".encode())
    stderr.flush()
    client = _connect(address, name, options, stderr)
    try:
        channel = client.get_transport().open_session(timeout=options.timeout)
        if command:
            try:
                channel.exec_command(command)
            except paramiko.SSHException:
                # A server that answers and closes before acknowledging the request: the
                # answer and the exit status are already here.
                if not channel.exit_status_ready():
                    raise
            return _pump(channel, None, stdout, stderr)
        return _shell(channel, stdin, stdout, stderr)
    except (paramiko.SSHException, OSError) as exc:
        raise SshError(f"ssh to {address}: {exc}") from None
    finally:
        client.close()


class _HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Refuse an unknown host key (with its fingerprint), or trust and store it if asked."""

    def __init__(self, options: SshOptions, vm_name: str, stderr: IO[bytes]) -> None:
        self.options = options
        self.vm_name = vm_name
        self.stderr = stderr

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        path = self.options.known_hosts
        if not self.options.accept_new_host_key:
            raise SshError(
                f"the host key of {hostname} ({self.vm_name}) is not in {path}: "
                f"{key.get_name()} {key.fingerprint}; if that is the VM's key (compare with its "
                "console log), run again with --accept-new-host-key to trust and store it"
            )
        client.get_host_keys().add(hostname, key.get_name(), key)
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a") as f:
                f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
        except OSError as exc:
            raise SshError(f"cannot store the host key in {path}: {exc.strerror}") from None
        self.stderr.write(
            f"astara-ctl: trusted {hostname} {key.fingerprint}, stored in {path}\n".encode()
        )


def _connect(
    address: str, vm_name: str, options: SshOptions, stderr: IO[bytes]
) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    where = f"{options.user}@{address} port {options.port}"
    try:
        if options.known_hosts.exists():
            client.load_host_keys(str(options.known_hosts))
        client.set_missing_host_key_policy(_HostKeyPolicy(options, vm_name, stderr))
        pkey = _load_key(options.key) if options.key else None
        client.connect(
            address,
            options.port,
            username=options.user,
            pkey=pkey,
            allow_agent=pkey is None,
            look_for_keys=pkey is None,
            timeout=options.timeout,
            banner_timeout=options.timeout,
            auth_timeout=options.timeout,
        )
    except SshError:
        client.close()
        raise
    except paramiko.BadHostKeyException as exc:
        client.close()
        host = address if options.port == 22 else f"[{address}]:{options.port}"
        raise SshError(
            f"the host key of {host} ({vm_name}) has CHANGED: now {exc.key.fingerprint}, "
            f"{options.known_hosts} has {exc.expected_key.fingerprint}; a rebuilt VM has a new "
            f"key: if this router was rebuilt, run ssh-keygen -R '{host}' -f {options.known_hosts}"
        ) from None
    except paramiko.AuthenticationException as exc:
        client.close()
        raise SshError(f"{where}: authentication failed ({exc})") from None
    except (paramiko.SSHException, OSError) as exc:
        client.close()
        raise SshError(f"cannot connect to {where}: {exc}") from None
    return client


def _load_key(path: str) -> paramiko.PKey:
    try:
        return paramiko.PKey.from_path(Path(path).expanduser())
    except paramiko.PasswordRequiredException:
        raise SshError(f"the key {path} is encrypted: add it to ssh-agent instead") from None
    except OSError as exc:
        raise SshError(f"cannot read the key {path}: {exc.strerror}") from None
    except (paramiko.SSHException, ValueError) as exc:
        raise SshError(f"{path} is not a private key paramiko can use: {exc}") from None


def _pump(
    channel: paramiko.Channel, stdin: IO[bytes] | None, stdout: IO[bytes], stderr: IO[bytes]
) -> int:
    """Copy the channel's output (and ``stdin`` to it) until it ends; the remote exit status."""
    sources: list[Any] = [channel] + ([stdin] if stdin is not None else [])
    while True:
        readable, _, _ = select.select(sources, [], [])
        if stdin is not None and stdin in readable:
            data = os.read(stdin.fileno(), 4096)
            if data:
                channel.sendall(data)
            else:
                channel.shutdown_write()
                sources.remove(stdin)
        while channel.recv_ready():
            stdout.write(channel.recv(65536))
        stdout.flush()
        while channel.recv_stderr_ready():
            stderr.write(channel.recv_stderr(65536))
        stderr.flush()
        if (channel.eof_received or channel.closed) and not (
            channel.recv_ready() or channel.recv_stderr_ready()
        ):
            break
    status = channel.recv_exit_status()
    return EXIT_SSH if status < 0 else status


def _shell(
    channel: paramiko.Channel, stdin: IO[bytes], stdout: IO[bytes], stderr: IO[bytes]
) -> int:
    """An interactive shell: a pty and raw keyboard when stdin is a terminal, else a pipe."""
    if not os.isatty(stdin.fileno()):
        channel.invoke_shell()
        return _pump(channel, stdin, stdout, stderr)
    import termios
    import tty

    size = os.get_terminal_size(stdin.fileno())
    channel.get_pty(term=os.environ.get("TERM", "xterm"), width=size.columns, height=size.lines)
    channel.invoke_shell()

    def resized(_signum: int, _frame: Any) -> None:
        new = os.get_terminal_size(stdin.fileno())
        channel.resize_pty(width=new.columns, height=new.lines)

    saved = termios.tcgetattr(stdin.fileno())
    previous = signal.signal(signal.SIGWINCH, resized)
    try:
        tty.setraw(stdin.fileno())
        return _pump(channel, stdin, stdout, stderr)
    finally:
        termios.tcsetattr(stdin.fileno(), termios.TCSADRAIN, saved)
        signal.signal(signal.SIGWINCH, previous)
