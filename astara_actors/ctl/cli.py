"""astara-ctl: instruct the running astara orchestrators and look at their routers.

Usage:
  astara-ctl [options] browse [--dump]
  astara-ctl [options] poll
  astara-ctl [options] router (update|debug|manage) <router-id> [--reason=TEXT]
  astara-ctl [options] router rebuild <router-id> [--reason=TEXT] [--image=IMAGE]
  astara-ctl [options] router show <router-id> [--limit=N]
  astara-ctl [options] tenant (debug|manage) <tenant-id> [--reason=TEXT]
  astara-ctl [options] resource (update|debug|manage) <resource-id> [--reason=TEXT]
  astara-ctl [options] resource rebuild <resource-id> [--reason=TEXT] [--image=IMAGE]
  astara-ctl [options] global debug (enable|disable) [--reason=TEXT]
  astara-ctl [options] config reload
  astara-ctl [options] workers debug
  astara-ctl [options] audit [--limit=N] [--router=ID] [--tenant=ID] [--since=TIME]
  astara-ctl [options] ssh [--vm=N] [--user=USER] [--port=PORT] [--key=FILE]
             [--known-hosts=FILE] [--accept-new-host-key] <router-id> [--] [<command>...]
  astara-ctl (-h | --help)

Commands go to every orchestrator and each applies what it owns. `router`/`resource`
`update` and `rebuild` also take the ids `*` (every router) and `error` (routers in ERROR).
`workers debug` prints each orchestrator's supervision tree (and has them log it).
`audit` lists the commands the orchestrators recorded: when (UTC), who, what, on what and
why, oldest first and newest last as journalctl(1) (the last 50 unless --limit says).
`router show` ends with the router's last commands (10 unless --limit says), with those
for its tenant and for every router marked so.
`ssh` connects to the router's service VM on its management address and runs <command>,
or opens a shell; as with ssh(1), its options go before <router-id> and everything after
<router-id> is the remote command.

Options:
  --config-file=FILE     The orchestrator's configuration file, for where the bus is
                         [default: /etc/astara/orchestrator.ini].
  --json                 Print JSON instead of text.
  --timeout=SECONDS      How long to wait for the orchestrators to answer [default: 5].
  -v --verbose           Log what the bus and ssh clients do (to stderr).
  --reason=TEXT          Why: recorded with the command, shown by `router show`; at most
                         255 characters, no newline or other control character [default: ].
  --image=IMAGE          Rebuild from this image instead of the configured one.
  --dump                 Print one snapshot of the router list and exit.
  --limit=N              How many commands to list, at most 1000.
  --router=ID            Only the commands aimed at this router.
  --tenant=ID            Only the commands for this tenant (its debug and manage, and those
                         aimed at its routers).
  --since=TIME           Only the commands recorded since TIME: an ISO 8601 date or time
                         (2025-01-31, 2025-01-31T12:00:00Z; UTC unless it says) or an age
                         (30m, 2h, 7d).
  --vm=N                 Which VM of an HA router, counting from 0 [default: 0].
  --user=USER            The user on the service VM [default: astara].
  --port=PORT            The service VM's ssh port (default: 22).
  --key=FILE             The private key (default: the ssh agent and ~/.ssh/id_*).
  --known-hosts=FILE     Where trusted host keys are kept (default: ~/.ssh/known_hosts).
  --accept-new-host-key  Trust a VM's host key seen for the first time, and store it.
  -h --help              Show this help.

Exit status: 0 done; 1 the orchestrators answered no (an unknown router, a failed answer);
2 a usage error, a malformed id, a bad configuration, no orchestrator answering, or the bus
unreachable. `ssh` exits with the remote command's status, or 255 if it cannot connect.

With the demo's configuration (embedded_sim = true) `ssh` defaults to the simulator's
[sim] ssh_port, the demo's key <state_dir>/ssh/id_ecdsa and <state_dir>/ssh/known_hosts.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from docopt import DocoptExit, docopt

from astara_actors.core import validate
from astara_actors.ctl.session import (
    EXIT_USAGE,
    CtlError,
    Session,
    check_command,
    check_query,
    tenant_hint,
)
from astara_actors.errors import AstaraError
from astara_actors.protocol import audit
from astara_actors.protocol.control import Command, CommandKind, QueryKind

__all__ = ["main"]

_WILDCARDS = ("*", "error")


def as_known_tenant(tenant_id: str, known: set[str]) -> str:
    """``tenant_id`` in the form the orchestrators know it by: a project id typed with hyphens
    (or without) matches the same id written the other way."""
    if tenant_id in known or tenant_id in _WILDCARDS:
        return tenant_id
    try:
        parsed = uuid.UUID(tenant_id)
    except ValueError:
        return tenant_id
    for form in (parsed.hex, str(parsed)):
        if form in known:
            return form
    return tenant_id


def _note(text: str) -> None:
    """A remark for the operator, on stderr: stdout stays the command's (or --json) output."""
    print(f"astara-ctl: {text}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run one astara-ctl command; returns the exit status (see the usage)."""
    argv = _ssh_command_last(sys.argv[1:] if argv is None else list(argv))
    head = argv[: argv.index("--")] if "--" in argv else argv
    if "-h" in head or "--help" in head:
        print(__doc__.strip())
        return 0
    try:
        args = docopt(__doc__, argv, default_help=False)
    except DocoptExit as exc:
        detail = str(exc).split("\n", 1)[0]
        print(exc.usage, file=sys.stderr)
        if detail and not detail.startswith("Warning: found unmatched"):
            print(f"astara-ctl: {detail}", file=sys.stderr)
        print(
            "astara-ctl: the arguments match no usage above (see astara-ctl --help)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    _quiet_logging(args["--verbose"])
    try:
        return _Run(args).dispatch()
    except BrokenPipeError:
        # `astara-ctl workers debug | head`: the reader left; say nothing more, as other tools.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except CtlError as exc:
        print(f"astara-ctl: {exc}", file=sys.stderr)
        return exc.exit_code
    except AstaraError as exc:  # the configuration file, in practice
        print(f"astara-ctl: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


_VALUED = {"--config-file", "--timeout", "--vm", "--user", "--port", "--key", "--known-hosts"}


def _ssh_command_last(argv: list[str]) -> list[str]:
    """As ssh(1): after ``ssh``'s <router-id>, every word is the remote command's (``--``)."""
    if "ssh" not in argv or "--" in argv:
        return argv
    i, seen_ssh = 0, False
    while i < len(argv):
        word = argv[i]
        if word.startswith("-"):
            i += 2 if word in _VALUED else 1
            continue
        if seen_ssh:  # the router id
            return argv[: i + 1] + ["--"] + argv[i + 1 :] if i + 1 < len(argv) else argv
        if word != "ssh":
            return argv
        seen_ssh = True
        i += 1
    return argv


def _quiet_logging(verbose: bool) -> None:
    if verbose:
        from astara_actors.log import install

        logging.basicConfig(
            level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
        )
        install()  # what the orchestrators answer is shown escaped, each line bounded
    else:  # the one line from main is the message; keep library retries off the screen
        logging.getLogger().addHandler(logging.NullHandler())


class _Run:
    """One invocation: the parsed arguments, the session, and a method per command."""

    def __init__(self, args: dict[str, Any]) -> None:
        self.args = args
        self.json: bool = bool(args["--json"])
        self.reason: str = args["--reason"] or ""
        self._session: Session | None = None
        self.config: Any = None  # the Config, once the session needed it

    def dispatch(self) -> int:
        a = self.args
        table: list[tuple[bool, Callable[[], int]]] = [
            (a["browse"], self.browse),
            (a["poll"], lambda: self.broadcast(Command(CommandKind.POLL))),
            (a["router"] and a["show"], self.router_show),
            (a["router"] or a["resource"], self.targeted),
            (a["tenant"], self.tenant),
            (a["global"], self.global_debug),
            (a["config"], lambda: self.broadcast(Command(CommandKind.CONFIG_RELOAD))),
            (a["workers"], self.workers_debug),
            (a["audit"], self.audit),
            (a["ssh"], self.ssh),
        ]
        try:
            return next(run for chosen, run in table if chosen)()
        finally:
            if self._session is not None:
                self._session.close()

    # --- plumbing
    @property
    def session(self) -> Session:
        if self._session is None:
            from astara_actors.config.loader import load_config
            from astara_actors.errors import SettingsError

            path = self.args["--config-file"]
            try:
                self.config = config = load_config(path)
            except SettingsError as exc:
                hint = " (say which file with --config-file)" if exc.section == "-" else ""
                raise CtlError(f"{exc}{hint}", EXIT_USAGE) from None
            self._session = Session(config.bus, _timeout(self.args["--timeout"]))
        return self._session

    def emit(self, text: str | list[str], data: Any) -> None:
        if self.json:
            print(json.dumps(data, indent=2, sort_keys=True, default=str))
        else:
            print(text if isinstance(text, str) else "\n".join(text))

    def sent(self, command: Command, hosts: list[str]) -> int:
        payload = self.session.send(command)
        target = command.router_id or command.tenant_id
        what = f" for {target}" if target else ""
        if command.enabled is not None:
            what = " enable" if command.enabled else " disable"
        self.emit(
            f"sent {command.kind}{what}"
            + (f" (reason: {command.reason})" if command.reason else "")
            + f" to {', '.join(hosts)}",
            {"sent": payload, "orchestrators": hosts},
        )
        return 0

    # --- commands
    def broadcast(self, command: Command) -> int:
        return self.sent(command, self.session.probe())

    def targeted(self) -> int:
        a = self.args
        verb = next(v for v in ("rebuild", "update", "debug", "manage") if a[v])
        noun, key = ("router", "<router-id>") if a["router"] else ("resource", "<resource-id>")
        target = a[key].strip()
        payload: dict[str, Any] = {
            "command": f"{noun}-{verb}",
            f"{noun}_id": target,
            "tenant_id": "*",
            "reason": self.reason,
        }
        if a["--image"]:
            payload[f"{noun}_image_uuid"] = a["--image"]
        command = check_command(payload)  # before anything is sent: ids, wildcards
        if command.router_id in _WILDCARDS:
            # As the original: the wildcard stands for the tenant too.
            return self.sent(
                dataclasses.replace(command, tenant_id=command.router_id), self.session.probe()
            )
        dump, host = self.session.router(command.router_id)
        payload["router_id" if noun == "router" else "resource_id"] = command.router_id
        command = check_command({**payload, "tenant_id": tenant_hint(dump)})
        return self.sent(command, [host])

    def router_show(self) -> int:
        commands = _limit(self.args["--limit"], least=0)
        query = check_query({"query": "router", "router_id": self.args["<router-id>"].strip()})
        dump, host = self.session.router(query.router_id, commands=commands)
        from astara_actors.ctl.render import router_dump

        self.emit(router_dump(dump, host), {"host": host, "router": dump})
        return 0

    def tenant(self) -> int:
        verb = "debug" if self.args["debug"] else "manage"
        command = check_command(
            {
                "command": f"tenant-{verb}",
                "tenant_id": self.args["<tenant-id>"],
                "reason": self.reason,
            }
        )
        routers, hosts = self.session.routers()
        known = {str(r.get("tenant_id", "")) for r in routers}
        tenant = as_known_tenant(command.tenant_id, known)
        if tenant != command.tenant_id:
            _note(f"tenant {command.tenant_id} is {tenant} to Neutron: sent for {tenant}")
            command = dataclasses.replace(command, tenant_id=tenant)
        done = self.sent(command, hosts)
        count = sum(1 for r in routers if r.get("tenant_id") == tenant)
        if count:
            _note(f"{count} router(s) of tenant {tenant} on {', '.join(hosts)}")
        else:
            _note(
                f"no orchestrator drives a router of tenant {tenant}: nothing changed now; the "
                f"flag is kept and applies to its routers when they appear"
                + ("" if verb == "manage" else f" (astara-ctl tenant manage {tenant} clears it)")
            )
        return done

    def global_debug(self) -> int:
        command = check_command(
            {
                "command": str(CommandKind.GLOBAL_DEBUG),
                "enabled": 1 if self.args["enable"] else 0,
                "reason": self.reason,
            }
        )
        return self.broadcast(command)

    def workers_debug(self) -> int:
        trees = self.session.workers()
        self.session.send(Command(CommandKind.WORKERS_DEBUG))  # and log it, as the original
        from astara_actors.ctl.render import workers_tree

        lines = [line for host, tree in trees for line in workers_tree(host, tree)]
        self.emit(lines, {"workers": {host: tree for host, tree in trees}})
        return 0

    def audit(self) -> int:
        a = self.args
        payload: dict[str, Any] = {"query": str(QueryKind.AUDIT)}
        limit = _limit(a["--limit"], least=1)
        if limit is not None:
            payload["limit"] = limit
        if a["--router"] is not None:
            payload["router_id"] = _checked(validate.neutron_id, a["--router"], "--router")
        if a["--tenant"] is not None:
            payload["tenant_id"] = _checked(validate.tenant_id, a["--tenant"], "--tenant")
        if a["--since"] is not None:
            try:
                since = audit.parse_since(a["--since"], datetime.now(UTC))
            except audit.TimeError as exc:
                raise CtlError(f"--since: {exc}", EXIT_USAGE) from None
            payload["since"] = audit.when(since)
        query = check_query(payload)
        entries, hosts, failed = self.session.audit(query)
        for line in failed:  # another member may share its database: say so, go on
            _note(f"no audit trail from {line}")
        from astara_actors.ctl.render import audit_table

        filtered = any(a[key] is not None for key in ("--router", "--tenant", "--since"))
        self.emit(audit_table(entries, filtered), {"audit": entries, "orchestrators": hosts})
        return 0

    def browse(self) -> int:
        from astara_actors.ctl import browse

        if self.args["--dump"]:
            return browse.dump(self.session, as_json=self.json)
        return browse.run(self.session)

    def ssh(self) -> int:
        check_query({"query": "router", "router_id": self.args["<router-id>"].strip()})
        from astara_actors.ctl import ssh

        ssh.SshOptions.from_args(self.args)  # malformed options: say so before asking anyone
        dump, _host = self.session.router(self.args["<router-id>"].strip())
        options = ssh.SshOptions.from_args(self.args, ssh.SshOptions.defaults(self.config))
        return ssh.run(dump, options, " ".join(self.args["<command>"]))


def _limit(text: str | None, least: int) -> int | None:
    """``--limit``'s number (None when not given); a usage error if it is not one."""
    if text is None:
        return None
    value = int(text) if text.strip().isdigit() and len(text) < 12 else -1
    if not least <= value <= audit.MAX_LIMIT:
        raise CtlError(
            f"--limit must be a whole number from {least} to {audit.MAX_LIMIT}, not {text!r}",
            EXIT_USAGE,
        )
    return value


def _checked(parse: Callable[[object, str], str], value: str, option: str) -> str:
    try:
        return parse(value.strip(), option)
    except validate.InvalidValue as exc:
        raise CtlError(str(exc), EXIT_USAGE) from None


def _timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 3600:
        raise CtlError(
            f"--timeout must be a number of seconds between 0 and 3600, not {text!r}", EXIT_USAGE
        )
    return value


if __name__ == "__main__":
    sys.exit(main())
