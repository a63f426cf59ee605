"""The simulated Keystone: projects, users with roles on projects, and password tokens in memory.

Everything lives in the Default domain. A fresh model holds user ``admin`` (password from the
constructor) with Keystone's admin roles on project ``admin``; :meth:`KeystoneModel.add_project`
and :meth:`KeystoneModel.add_user` create tenants such as ``demo-1``.
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from astara_actors.errors import AstaraError
from astara_actors.sim.contracts import Caller

__all__ = [
    "ADMIN_ROLES",
    "AuthenticationFailed",
    "KeystoneModel",
    "MEMBER_ROLES",
    "Project",
    "Token",
    "User",
]

# Role lists as a real token shows them (admin implies manager, member and reader).
ADMIN_ROLES = ("member", "manager", "reader", "admin")
MEMBER_ROLES = ("member", "reader")


class AuthenticationFailed(AstaraError):
    """Raised when a user name, password or project scope does not check out."""


@dataclass(frozen=True, slots=True)
class Project:
    """A Keystone project (tenant) in domain Default."""

    id: str
    name: str


@dataclass(frozen=True, slots=True)
class User:
    """A Keystone user in domain Default."""

    id: str
    name: str
    password: str


@dataclass(frozen=True, slots=True)
class Token:
    """An issued token: who, scoped to which project with which roles, valid until when."""

    id: str
    user: User
    project: Project
    roles: tuple[str, ...]
    issued_at: float
    expires_at: float
    audit_id: str

    @property
    def caller(self) -> Caller:
        """The :class:`Caller` the services see for this token."""
        return Caller(
            user_id=self.user.id,
            project_id=self.project.id,
            is_admin="admin" in self.roles,
            roles=self.roles,
            user_name=self.user.name,
            project_name=self.project.name,
        )


class KeystoneModel:
    """Projects, users, role assignments and tokens; thread-safe."""

    def __init__(
        self,
        *,
        admin_password: str = "admin",
        token_ttl: float = 3600.0,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[], uuid.UUID] = uuid.uuid4,
    ) -> None:
        self._lock = threading.RLock()
        self._clock = clock
        self._new_id = new_id
        self.token_ttl = token_ttl
        self._projects: dict[str, Project] = {}
        self._users: dict[str, User] = {}
        self._roles: dict[tuple[str, str], tuple[str, ...]] = {}
        self._role_ids: dict[str, str] = {}
        self._tokens: dict[str, Token] = {}
        self.changes = 0  # bumped by every change of the directory (a kept cloud is saved then)
        self.admin_project = self.add_project("admin")
        self.admin_user = self.add_user("admin", admin_password, self.admin_project, ADMIN_ROLES)

    # -- directory -------------------------------------------------------------------------

    def add_project(self, name: str, project_id: str | None = None) -> Project:
        """A new project (or the existing one of that name)."""
        with self._lock:
            existing = self.find_project(name)
            if existing is not None:
                return existing
            project = Project(id=project_id or self._new_id().hex, name=name)
            self._projects[project.id] = project
            self.changes += 1
            return project

    def add_user(
        self,
        name: str,
        password: str,
        project: Project | str,
        roles: Iterable[str] = MEMBER_ROLES,
    ) -> User:
        """A new user (or the existing one of that name) with ``roles`` on ``project``."""
        with self._lock:
            if isinstance(project, str):
                found = self.find_project(project)
                project = found if found is not None else self.add_project(project)
            user = self.find_user(name)
            if user is None:
                user = User(id=self._new_id().hex, name=name, password=password)
                self._users[user.id] = user
                self.changes += 1
            self.grant(user, project, roles)
            return user

    def grant(self, user: User, project: Project, roles: Iterable[str]) -> None:
        """Give ``user`` ``roles`` on ``project`` (in addition to any they hold)."""
        with self._lock:
            held = self._roles.get((user.id, project.id), ())
            self._roles[(user.id, project.id)] = held + tuple(r for r in roles if r not in held)
            self.changes += 1

    def find_project(self, name_or_id: str) -> Project | None:
        with self._lock:
            return self._projects.get(name_or_id) or next(
                (p for p in self._projects.values() if p.name == name_or_id), None
            )

    def find_user(self, name_or_id: str) -> User | None:
        with self._lock:
            return self._users.get(name_or_id) or next(
                (u for u in self._users.values() if u.name == name_or_id), None
            )

    def projects(self) -> list[Project]:
        with self._lock:
            return list(self._projects.values())

    def role_id(self, name: str) -> str:
        """A stable id for a role name."""
        with self._lock:
            return self._role_ids.setdefault(name, self._new_id().hex)

    # -- what a restart keeps (astara_actors.sim.persist) ----------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Projects, users with their passwords, role assignments and role ids, as plain
        JSON values (tokens are not kept: clients authenticate again)."""
        with self._lock:
            return {
                "projects": [[p.id, p.name] for p in self._projects.values()],
                "users": [[u.id, u.name, u.password] for u in self._users.values()],
                "roles": [[user, project, list(r)] for (user, project), r in self._roles.items()],
                "role_ids": dict(self._role_ids),
                "admin": [self.admin_project.id, self.admin_user.id],
            }

    def prepare_restore(
        self, state: Mapping[str, Any], *, admin_password: str
    ) -> Callable[[], None]:
        """Read a :meth:`snapshot` (raising ``KeyError``/``TypeError``/``ValueError`` if it is
        malformed, changing nothing); the function returned installs it. The admin's password
        is ``admin_password`` (the configured one, which the orchestrator logs in with)."""
        projects = {str(pid): Project(str(pid), str(name)) for pid, name in state["projects"]}
        users = {str(uid): User(str(uid), str(name), str(pw)) for uid, name, pw in state["users"]}
        roles: dict[tuple[str, str], tuple[str, ...]] = {}
        for user_id, project_id, held in state["roles"]:
            if user_id not in users or project_id not in projects:
                raise ValueError(f"a role of unknown user {user_id} or project {project_id}")
            roles[(user_id, project_id)] = tuple(str(r) for r in held)
        role_ids = {str(name): str(rid) for name, rid in dict(state["role_ids"]).items()}
        project_id, user_id = state["admin"]
        admin_project, admin = projects[project_id], users[user_id]
        users[admin.id] = admin = User(admin.id, admin.name, admin_password)

        def install() -> None:
            with self._lock:
                self._projects, self._users, self._roles = projects, users, roles
                self._role_ids = role_ids
                self._tokens.clear()
                self.admin_project, self.admin_user = admin_project, admin
                self.changes += 1

        return install

    # -- tokens ----------------------------------------------------------------------------

    def authenticate(self, user: str, password: str, project: str) -> Token:
        """A token for ``user`` (name or id) scoped to ``project`` (name or id)."""
        with self._lock:
            found = self.find_user(user)
            if found is None or not secrets.compare_digest(found.password, password):
                raise AuthenticationFailed("The request you have made requires authentication.")
            scope = self.find_project(project)
            roles = self._roles.get((found.id, scope.id), ()) if scope else ()
            if scope is None or not roles:
                raise AuthenticationFailed(f"User {found.id} has no access to project {project}")
            now = self._clock()
            self._purge(now)
            token = Token(
                id=secrets.token_hex(32),
                user=found,
                project=scope,
                roles=roles,
                issued_at=now,
                expires_at=now + self.token_ttl,
                audit_id=secrets.token_urlsafe(16)[:22],
            )
            self._tokens[token.id] = token
            return token

    def validate(self, token_id: str) -> Token | None:
        """The token if it exists and has not expired."""
        with self._lock:
            token = self._tokens.get(token_id)
            if token is None or token.expires_at <= self._clock():
                return None
            return token

    def caller(self, token: str) -> Caller | None:
        """:class:`~astara_actors.sim._http.TokenValidator`: the caller holding ``token``."""
        found = self.validate(token)
        return found.caller if found else None

    def revoke(self, token_id: str) -> bool:
        """Forget a token; False if it was unknown."""
        with self._lock:
            return self._tokens.pop(token_id, None) is not None

    def _purge(self, now: float) -> None:
        # Keystoneauth reuses its token, so the table stays small; sweep only when it grows.
        if len(self._tokens) > 1000:
            for key in [k for k, t in self._tokens.items() if t.expires_at <= now]:
                del self._tokens[key]
