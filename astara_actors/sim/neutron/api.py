"""Neutron v2.0 over Falcon: version documents, extensions, the five resources, router interfaces.

Mount with :func:`add_neutron_routes`; with ``prefix="/network"`` the catalog URL is
``http://host:port/network`` (openstacksdk appends ``/v2.0`` itself, with no discovery).
Errors use Neutron's body ``{"NeutronError": {"type", "message", "detail"}}``.

``If-Match: revision_number=N`` (the revision-if-match extension) is read on every request to
a collection or one of its resources, as Neutron's query-parameters hook reads it: malformed,
it is a 400 whatever the method; well-formed, it constrains a PUT or DELETE of that resource
(412 ``RevisionNumberConstraintFailed`` when the revision moved on) and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import falcon
import falcon.uri

from astara_actors.sim._http import neutron_error, read_json, require_caller
from astara_actors.sim.contracts import Caller
from astara_actors.sim.neutron.base import revision_constraint
from astara_actors.sim.neutron.extensions import extensions
from astara_actors.sim.neutron.model import COLLECTIONS, NeutronFault, NeutronModel

__all__ = ["add_neutron_routes"]

Auth = Callable[[falcon.Request], Caller]
BaseUrlOf = Callable[[falcon.Request], str]


class _Resource:
    def __init__(
        self, neutron: NeutronModel, auth: Auth, prefix: str, base_url_of: BaseUrlOf, kind: str = ""
    ) -> None:
        self.neutron = neutron
        self.auth = auth
        self.prefix = prefix
        self.base_url_of = base_url_of
        self.kind = kind

    def url(self, req: falcon.Request, path: str) -> str:
        return f"{self.base_url_of(req)}{self.prefix}{path}"

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except NeutronFault as fault:
            raise neutron_error(fault.status, fault.type, fault.message) from None

    def if_revision(self, req: falcon.Request) -> int | None:
        """The revision ``If-Match`` constrains the request to (None: none); 400 if malformed."""
        return self.call(revision_constraint, req.get_header("If-Match"))

    def body(self, req: falcon.Request, key: str) -> dict[str, Any]:
        data = read_json(req)
        if not isinstance(data, dict) or not isinstance(data.get(key), dict):
            raise neutron_error(400, "HTTPBadRequest", "Resource body required")
        return dict(data[key])


class _Versions(_Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {
            "versions": [
                {
                    "id": "v2.0",
                    "links": [{"href": self.url(req, "/v2.0/"), "rel": "self"}],
                    "status": "CURRENT",
                }
            ]
        }


class _V20(_Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        self.auth(req)
        resp.media = {
            "resources": [
                {
                    "collection": collection,
                    "links": [{"href": self.url(req, f"/v2.0/{collection}"), "rel": "self"}],
                    "name": name,
                }
                for name, collection in (
                    ("network", "networks"),
                    ("subnet", "subnets"),
                    ("subnetpool", "subnetpools"),
                    ("port", "ports"),
                )
            ]
        }


class _Extensions(_Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        self.auth(req)
        resp.media = {"extensions": extensions()}


class _Extension(_Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response, alias: str) -> None:
        self.auth(req)
        for extension in extensions():
            if extension["alias"] == alias:
                resp.media = {"extension": extension}
                return
        raise neutron_error(404, "HTTPNotFound", "The resource could not be found.")


class _Collection(_Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        caller = self.auth(req)
        self.if_revision(req)
        filters = falcon.uri.parse_query_string(req.query_string, keep_blank=True, csv=False)
        items = self.call(self.neutron.list, self.kind, caller, filters)
        collection = COLLECTIONS[self.kind]
        resp.media = {collection: items}
        if filters.get("limit") or filters.get("marker"):
            links = self._page_links(req, collection, filters, items)
            if links:
                resp.media[f"{collection}_links"] = links

    def _page_links(
        self,
        req: falcon.Request,
        collection: str,
        filters: dict[str, Any],
        items: list[dict[str, Any]],
    ) -> list[dict[str, str]]:
        """Neutron's ``<collection>_links``: ``next`` after a full page (from its last id),
        ``previous`` when this page started after a marker (from its first id)."""
        limit = int(filters.get("limit") or 0)
        kept = [
            (key, value)
            for key, values in filters.items()
            if key not in ("limit", "marker", "page_reverse")
            for value in ([values] if isinstance(values, str) else values)
        ]
        base = self.url(req, f"/v2.0/{collection}")

        def link(rel: str, marker: str, reverse: bool) -> dict[str, str]:
            query = [*kept, *([("limit", str(limit))] if limit else []), ("marker", marker)]
            if reverse:
                query.append(("page_reverse", "True"))
            return {"href": f"{base}?{urlencode(query)}", "rel": rel}

        links = []
        if limit and len(items) == limit:
            links.append(link("next", items[-1]["id"], False))
        if filters.get("marker") and items:
            links.append(link("previous", items[0]["id"], True))
        return links

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        caller = self.auth(req)
        self.if_revision(req)  # checked, constrains nothing: there is no resource yet
        attrs = self.body(req, self.kind)
        resp.media = {self.kind: self.call(self.neutron.create, self.kind, attrs, caller)}
        resp.status = falcon.HTTP_201


class _Item(_Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response, resource_id: str) -> None:
        caller = self.auth(req)
        self.if_revision(req)  # checked; a read changes nothing, so it is never compared
        view = self.call(self.neutron.get, self.kind, resource_id, caller)
        fields = falcon.uri.parse_query_string(req.query_string, csv=False).get("fields")
        if fields:
            wanted = [fields] if isinstance(fields, str) else fields
            view = {key: value for key, value in view.items() if key in wanted}
        resp.media = {self.kind: view}

    def on_put(self, req: falcon.Request, resp: falcon.Response, resource_id: str) -> None:
        caller = self.auth(req)
        revision = self.if_revision(req)
        attrs = self.body(req, self.kind)
        resp.media = {
            self.kind: self.call(
                lambda: self.neutron.update(
                    self.kind, resource_id, attrs, caller, if_revision=revision
                )
            )
        }

    def on_delete(self, req: falcon.Request, resp: falcon.Response, resource_id: str) -> None:
        caller = self.auth(req)
        revision = self.if_revision(req)
        self.call(lambda: self.neutron.delete(self.kind, resource_id, caller, if_revision=revision))
        resp.status = falcon.HTTP_204


class _InterfaceAction(_Resource):
    def on_put(self, req: falcon.Request, resp: falcon.Response, resource_id: str) -> None:
        caller = self.auth(req)
        body = read_json(req)
        if not isinstance(body, dict):
            raise neutron_error(400, "HTTPBadRequest", "Resource body required")
        action = (
            self.neutron.add_router_interface
            if self.kind == "add"
            else self.neutron.remove_router_interface
        )
        resp.media = self.call(action, resource_id, body, caller)


class _Tags(_Resource):
    """``/<collection>/<id>/tags[/<tag>]`` of the standard-attr-tag extension."""

    def on_get(self, req: falcon.Request, resp: falcon.Response, resource_id: str) -> None:
        resp.media = {"tags": self.call(self.neutron.tags, self.kind, resource_id, self.auth(req))}

    def on_put_one(
        self, req: falcon.Request, resp: falcon.Response, resource_id: str, tag: str
    ) -> None:
        caller = self.auth(req)
        self.call(lambda: self.neutron.tag(self.kind, resource_id, tag, add=True, caller=caller))
        resp.status = falcon.HTTP_201

    def on_delete_one(
        self, req: falcon.Request, resp: falcon.Response, resource_id: str, tag: str
    ) -> None:
        caller = self.auth(req)
        self.call(lambda: self.neutron.tag(self.kind, resource_id, tag, add=False, caller=caller))
        resp.status = falcon.HTTP_204


def add_neutron_routes(
    app: falcon.App,
    neutron: NeutronModel,
    prefix: str = "/network",
    *,
    auth: Auth = require_caller,
    base_url_of: BaseUrlOf | None = None,
) -> None:
    """Serve ``neutron`` under ``prefix`` (the catalog's network URL is ``{base}{prefix}``).

    ``auth(req)`` gives the request's :class:`Caller` or raises 401 (default:
    :func:`~._http.require_caller`, which needs :class:`~._http.AuthMiddleware` on the app);
    ``base_url_of(req)`` is ``scheme://host:port`` for links (default: what the request used).
    """
    prefix = prefix.rstrip("/")
    args = (neutron, auth, prefix, base_url_of or (lambda req: req.prefix))
    app.add_route(prefix or "/", _Versions(*args))
    if prefix:
        app.add_route(f"{prefix}/", _Versions(*args))
    app.add_route(f"{prefix}/v2.0", _V20(*args))
    app.add_route(f"{prefix}/v2.0/", _V20(*args))
    app.add_route(f"{prefix}/v2.0/extensions", _Extensions(*args))
    app.add_route(f"{prefix}/v2.0/extensions/{{alias}}", _Extension(*args))
    for kind, collection in COLLECTIONS.items():
        app.add_route(f"{prefix}/v2.0/{collection}", _Collection(*args, kind=kind))
        app.add_route(f"{prefix}/v2.0/{collection}/{{resource_id}}", _Item(*args, kind=kind))
        tags = _Tags(*args, kind=kind)
        app.add_route(f"{prefix}/v2.0/{collection}/{{resource_id}}/tags", tags)
        app.add_route(
            f"{prefix}/v2.0/{collection}/{{resource_id}}/tags/{{tag}}", tags, suffix="one"
        )
    for action in ("add", "remove"):
        app.add_route(
            f"{prefix}/v2.0/routers/{{resource_id}}/{action}_router_interface",
            _InterfaceAction(*args, kind=action),
        )
