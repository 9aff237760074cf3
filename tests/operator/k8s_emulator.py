"""A Kubernetes API emulator good enough for kube-rs and kubectl, built on kmock's KubernetesEmulator.

kmock 0.8 serves discovery, list/watch, create, patch and delete, but as shipped a kube-rs
operator cannot run against it: stored objects get no uid/resourceVersion/generation, error
reasons are not the API server's (so `get_opt` fails), an apply PATCH cannot create, PUT is not
routed, watches ignore resourceVersion, core discovery says groupVersion "/v1", and a JSON-patch
`test` of a missing path fails. `RealisticEmulator` keeps kmock's HTTP server, request parsing,
object store (`.objects`, with history) and discovery scaffold, and replaces the object verbs
with the API server's semantics for what the operator and kubectl use. See README.md for what it
still does not emulate.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import json
import re
import uuid
from typing import Any

import aiohttp.web
import jsonpatch
import kmock
import yaml
from kmock._internal import rendering
from kmock._internal.references import ResourceInfo, resource

ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
EVENT_LOG_LIMIT = 5000  # older resourceVersions answer 410 Gone, as after an etcd compaction

# Built-in resources the operator and kubectl touch: (group, version, plural, kind, namespaced).
BUILTINS = [
    ("", "v1", "configmaps", "ConfigMap", True),
    ("", "v1", "events", "Event", True),
    ("events.k8s.io", "v1", "events", "Event", True),
    ("coordination.k8s.io", "v1", "leases", "Lease", True),
    ("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False),
]
CRD = ("apiextensions.k8s.io", "v1", "customresourcedefinitions")
SHORT_NAMES = {"configmaps": ["cm"], "events": ["ev"], "customresourcedefinitions": ["crd", "crds"]}


class ApiError(Exception):
    """An error answered as a v1 Status with the API server's reason and message."""

    def __init__(self, code: int, reason: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details or {}

    def status(self) -> dict:
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": self.message, "reason": self.reason, "details": self.details,
                "code": self.code}


class Kind:
    """What the emulator knows about one resource (built-in or from a CRD)."""

    def __init__(self, group: str, version: str, plural: str, kind: str, namespaced: bool,
                 *, singular: str = "", short_names=(), status: bool = False,
                 schema: dict | None = None, columns=(), custom: bool = False):
        self.group, self.version, self.plural, self.kind = group, version, plural, kind
        self.namespaced, self.singular = namespaced, singular or kind.lower()
        self.short_names, self.status, self.schema = list(short_names), status, schema
        self.columns, self.custom = list(columns), custom

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def qualified(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


def header(request, name: str, default: str = "") -> str:
    """A request header, case-insensitively (kmock keeps them in a plain dict)."""
    raw = getattr(request, "_raw_request", None)
    if raw is not None:
        return raw.headers.get(name, default)
    return next((v for k, v in request.headers.items() if k.lower() == name.lower()), default)


def now_rfc3339() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------- selectors


def label_selector_matches(selector: str, labels: dict) -> bool:
    """Equality (`a=b`, `a==b`, `a!=b`), set (`a in (x,y)`, `a notin (x)`) and existence (`a`, `!a`)."""
    if not selector:
        return True
    for term in re.split(r",(?![^()]*\))", selector):
        term = term.strip()
        if m := re.fullmatch(r"([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)", term):
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
            ok = labels.get(key) in values
            if (op == "in") != ok:
                return False
        elif "!=" in term:
            key, value = (s.strip() for s in term.split("!=", 1))
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = (s.strip() for s in term.replace("==", "=").split("=", 1))
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def field_selector_matches(selector: str, obj: dict) -> bool:
    """`metadata.name` and `metadata.namespace` with `=`, `==`, `!=` (what clients use)."""
    if not selector:
        return True
    meta = obj.get("metadata", {})
    for term in selector.split(","):
        negate = "!=" in term
        key, value = (s.strip() for s in re.split(r"!=|==|=", term, maxsplit=1))
        actual = {"metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace")}.get(key)
        if (actual == value) == negate:
            return False
    return True


# ---------------------------------------------------------------------------- patches and fields


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: dicts merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: dict, ops: list) -> dict:
    """RFC 6902 with the API server's leniency: `test` of a missing path against null passes."""
    kept = []
    for op in ops:
        if op.get("op") == "test" and op.get("value") is None:
            try:
                jsonpatch.JsonPointer(op["path"]).resolve(target)
            except (jsonpatch.JsonPointerException, KeyError, IndexError, TypeError):
                continue  # missing == null for the API server
        kept.append(op)
    try:
        return jsonpatch.apply_patch(target, kept, in_place=False)
    except jsonpatch.JsonPatchTestFailed as e:
        raise ApiError(422, "Invalid", f"the server rejected our request due to an error in our request: {e}")
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
        raise ApiError(422, "Invalid", f"the server rejected our request due to an error in our request: {e}")


def leaf_paths(obj: Any, prefix: tuple = ()) -> dict[tuple, Any]:
    """Field paths of an object for ownership: dicts are walked, lists and scalars are leaves."""
    if isinstance(obj, dict) and obj:
        out: dict[tuple, Any] = {}
        for key, value in obj.items():
            out.update(leaf_paths(value, prefix + (key,)))
        return out
    return {prefix: obj} if prefix else {}


def delete_path(obj: dict, path: tuple) -> None:
    """Removes `path` and then any dict it leaves empty."""
    parents = [obj]
    for key in path[:-1]:
        nxt = parents[-1].get(key)
        if not isinstance(nxt, dict):
            return
        parents.append(nxt)
    parents[-1].pop(path[-1], None)
    for depth in range(len(path) - 1, 0, -1):
        if not parents[depth]:
            parents[depth - 1].pop(path[depth - 1], None)


def get_path(obj: Any, path: tuple) -> Any:
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return KeyError
        obj = obj[key]
    return obj


# Fields that belong to the server or to the object's identity: never owned by a field manager.
SYSTEM_META = {"name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp",
               "deletionTimestamp", "deletionGracePeriodSeconds", "managedFields", "selfLink"}


def owned_paths(obj: dict) -> dict[tuple, Any]:
    paths = leaf_paths({k: v for k, v in obj.items() if k not in ("apiVersion", "kind")})
    return {p: v for p, v in paths.items() if not (p[0] == "metadata" and len(p) > 1 and p[1] in SYSTEM_META)}


def apply_defaults(obj: Any, schema: dict | None) -> Any:
    """Structural defaulting from an openAPIV3Schema: `default` of absent properties."""
    if not schema or not isinstance(obj, dict):
        return obj
    for name, prop in (schema.get("properties") or {}).items():
        if name not in obj and "default" in prop:
            obj[name] = copy.deepcopy(prop["default"])
        if name in obj:
            if isinstance(obj[name], dict):
                apply_defaults(obj[name], prop)
            elif isinstance(obj[name], list) and isinstance(prop.get("items"), dict):
                for item in obj[name]:
                    apply_defaults(item, prop["items"])
    return obj


def json_path(obj: Any, path: str) -> Any:
    """The small JSONPath subset of printer columns: `.a.b`, `.a[?(@.k=="v")].b`."""
    parts = re.findall(r"\.([A-Za-z0-9_-]+)|\[\?\(@\.(\w+)==\"([^\"]*)\"\)\]", path)
    cur = obj
    for field, fkey, fval in parts:
        if field:
            cur = cur.get(field) if isinstance(cur, dict) else None
        else:
            cur = next((i for i in cur or [] if isinstance(i, dict) and i.get(fkey) == fval), None)
        if cur is None:
            return None
    return cur


# ---------------------------------------------------------------------------- the emulator


class RealisticEmulator(kmock.KubernetesEmulator):
    """kmock's KubernetesEmulator with the API server's semantics for the verbs clients use."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.kinds: dict[tuple[str, str, str], Kind] = {}
        self.rv = 0
        self.log: list[tuple[int, tuple, str, dict]] = []  # (rv, kind key, type, object)
        self.watchers: set[asyncio.Queue] = set()
        self.owners: dict[tuple, dict[str, set[tuple]]] = {}  # object key -> manager -> paths
        self.state_lock = asyncio.Lock()
        for group, version, plural, kind, namespaced in BUILTINS:
            self.register(Kind(group, version, plural, kind, namespaced,
                               short_names=SHORT_NAMES.get(plural, ()),
                               status=plural == "customresourcedefinitions"))
        self.__attrs_post_init_openapi__()

    # -- discovery ---------------------------------------------------------------------------

    def register(self, kind: Kind) -> None:
        self.kinds[(kind.group, kind.version, kind.plural)] = kind
        self.resources[resource(kind.group, kind.version, kind.plural)] = ResourceInfo(
            kind=kind.kind, singular=kind.singular, namespaced=kind.namespaced, verbs=ALL_VERBS,
            shortnames=kind.short_names, subresources={"status"} if kind.status else set())

    def unregister(self, key: tuple[str, str, str]) -> None:
        self.kinds.pop(key, None)
        res = resource(*key)
        if res in self.resources:
            del self.resources[res]

    def _get_resources(self):
        # Only what is registered: objects of a deleted CRD do not keep their resource served.
        return [resource(*key) for key in self.kinds]

    async def _serve_version(self, request):
        payload = await super()._serve_version(request)
        if request.resource.group == "":
            payload["groupVersion"] = request.resource.version  # kmock says "/v1"
        for entry in payload["resources"]:
            if "/" in entry["name"]:  # a subresource: no names of its own (kmock copies them)
                entry.update(shortNames=[], singularName="", verbs=["get", "patch", "update"])
        return payload

    async def _serve_api(self, request):
        return {"kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}

    def __attrs_post_init_openapi__(self) -> None:
        # OpenAPI v3 with one permissive schema per kind (preserve-unknown-fields): kubectl's
        # client-side validation finds its kind and accepts the object; the emulator judges.
        self['get /openapi/v3'] << (lambda request: self._openapi_root())
        self[re.compile(r'/openapi/v3/apis?/.*')] << (lambda request: self._openapi_doc(request))

    def _openapi_root(self) -> dict:
        paths = {}
        for group, version, _ in self.kinds:
            path = f"apis/{group}/{version}" if group else f"api/{version}"
            paths[path] = {"serverRelativeURL": f"/openapi/v3/{path}?hash=0"}
        return {"paths": paths}

    def _openapi_doc(self, request) -> dict:
        """A group-version's document: per kind a PATCH path that declares `fieldValidation`
        (so kubectl leaves validation to the server instead of needing OpenAPI v2) and a
        permissive schema."""
        gv = request.url.path.split("/openapi/v3/", 1)[1].split("/", 1)[1]  # "v1" or "group/v1"
        group, _, version = gv.rpartition("/")
        paths, schemas = {}, {}
        for kind in self.kinds.values():
            if (kind.group, kind.version) != (group, version):
                continue
            gvk = {"group": kind.group, "version": kind.version, "kind": kind.kind}
            prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
            scope = "/namespaces/{namespace}" if kind.namespaced else ""
            paths[f"{prefix}{scope}/{kind.plural}/{{name}}"] = {"patch": {
                "x-kubernetes-group-version-kind": gvk,
                "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}],
                "responses": {"200": {"description": "OK"}},
            }}
            schemas[f"{kind.group or 'core'}.{kind.version}.{kind.kind}"] = {
                "type": "object", "x-kubernetes-preserve-unknown-fields": True,
                "x-kubernetes-group-version-kind": [gvk],
            }
        return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.33.0"},
                "paths": paths, "components": {"schemas": schemas}}

    async def _serve_server_version(self, request):
        return {"major": "1", "minor": "33", "gitVersion": "v1.33.0-rollcall-emulator",
                "gitCommit": "", "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
                "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64"}

    # -- dispatch ----------------------------------------------------------------------------

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        if m := re.fullmatch(r"/api/v1/namespaces(?:/([^/]+))?/?", request.url.path):
            return self._namespaces(request, m.group(1))
        res = request.resource
        if res is None or res.plural is None:
            return await super()._handle(request)  # discovery and anything not a resource
        try:
            kind = self.kinds.get((res.group, res.version, res.plural))
            if kind is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return await self._serve_object_request(request, kind)
        except ApiError as e:
            return aiohttp.web.json_response(e.status(), status=e.code)

    async def _serve_object_request(self, request, kind: Kind) -> aiohttp.web.StreamResponse:
        method = request.method.value if hasattr(request.method, "value") else str(request.method)
        sub = request.subresource
        if sub not in (None, "status") or (sub == "status" and not kind.status):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        params = request.params
        if method == "GET" and params.get("watch") in ("true", "1"):
            return await self._watch(request, kind)
        if method == "GET" and request.name is None:
            return self._json(self._list(request, kind))
        if method == "GET":
            obj = self._current(kind, request.namespace, request.name, must=True)
            if "as=Table" in header(request, "Accept") and kind.columns:
                return self._json(self._table(kind, [obj]))
            return self._json(obj)
        async with self.state_lock:
            if method == "POST" and request.name is None:
                return self._json(await self._create(request, kind, self._body(request)), 201)
            if method == "PUT" and request.name is not None:
                return self._json(await self._replace(request, kind, self._body(request)))
            if method == "PATCH" and request.name is not None:
                return self._json(await self._patch(request, kind))
            if method == "DELETE" and request.name is not None:
                return self._json(await self._delete(request, kind))
        raise ApiError(405, "MethodNotAllowed", f"the server does not allow this method on the requested resource")

    def _namespaces(self, request, name: str | None) -> aiohttp.web.Response:
        """Namespaces are implicit: every name exists and is Active (kmock's path parser reads
        `/api/v1/namespaces/x` as a namespace prefix without a resource)."""
        def namespace(n: str) -> dict:
            return {"apiVersion": "v1", "kind": "Namespace", "status": {"phase": "Active"},
                    "metadata": {"name": n, "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, n)),
                                 "resourceVersion": "1", "creationTimestamp": "2026-01-01T00:00:00Z"}}
        if str(request.method.value) != "GET":
            return self._json(ApiError(405, "MethodNotAllowed", "namespaces are implicit in this emulator").status(), 405)
        if name:
            return self._json(namespace(name))
        names = {"default"} | {ns for (_, ns, _), obj in self.objects.items() if ns and not obj.deleted}
        return self._json({"apiVersion": "v1", "kind": "NamespaceList", "metadata": {"resourceVersion": str(self.rv)},
                           "items": [namespace(n) for n in sorted(names)]})

    @staticmethod
    def _json(payload: dict, status: int = 200) -> aiohttp.web.Response:
        return aiohttp.web.json_response(payload, status=status)

    @staticmethod
    def _body(request) -> dict:
        text = request.text or ""
        try:
            body = json.loads(text) if text.strip().startswith("{") else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as e:
            raise ApiError(400, "BadRequest", f"the body of the request cannot be decoded: {e}")
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body of the request must be an object")
        return body

    # -- storage -----------------------------------------------------------------------------

    def _key(self, kind: Kind, namespace: str | None, name: str) -> tuple:
        return (resource(kind.group, kind.version, kind.plural), namespace if kind.namespaced else None, name)

    def _current(self, kind: Kind, namespace, name, must: bool = False) -> dict | None:
        key = self._key(kind, namespace, name)
        if key in self.objects and not self.objects[key].deleted:
            return copy.deepcopy(self.objects[key].raw)
        if must:
            raise ApiError(404, "NotFound", f'{kind.qualified()} "{name}" not found',
                           {"name": name, "group": kind.group, "kind": kind.plural})
        return None

    def _next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    async def _emit(self, kind: Kind, type_: str, obj: dict) -> None:
        event = (int(obj["metadata"]["resourceVersion"]), (kind.group, kind.version, kind.plural), type_,
                 copy.deepcopy(obj))
        self.log.append(event)
        del self.log[:-EVENT_LOG_LIMIT]
        for queue in list(self.watchers):
            queue.put_nowait(event)

    async def _store(self, kind: Kind, obj: dict, type_: str) -> dict:
        meta = obj["metadata"]
        key = self._key(kind, meta.get("namespace"), meta["name"])
        meta["resourceVersion"] = self._next_rv()
        if type_ == "ADDED" and key in self.objects:
            self.objects[key].create(copy.deepcopy(obj))
        elif type_ == "ADDED":
            self.objects[key] = copy.deepcopy(obj)
        else:
            self.objects[key].history.append(copy.deepcopy(obj))
        await self._emit(kind, type_, obj)
        if (kind.group, kind.version, kind.plural) == CRD:
            await self._crd_changed(obj, deleted=False)
        return copy.deepcopy(obj)

    async def _remove(self, kind: Kind, obj: dict) -> dict:
        meta = obj["metadata"]
        key = self._key(kind, meta.get("namespace"), meta["name"])
        meta["resourceVersion"] = self._next_rv()
        self.objects[key].history.append(copy.deepcopy(obj))
        self.objects[key].delete()
        self.owners.pop(key, None)
        await self._emit(kind, "DELETED", obj)
        if (kind.group, kind.version, kind.plural) == CRD:
            await self._crd_changed(obj, deleted=True)
        return copy.deepcopy(obj)

    # -- CRDs --------------------------------------------------------------------------------

    async def _crd_changed(self, crd: dict, deleted: bool) -> None:
        spec = crd.get("spec", {})
        group, names = spec.get("group", ""), spec.get("names", {})
        for version in spec.get("versions", []):
            key = (group, version["name"], names.get("plural", ""))
            if deleted or not version.get("served", True):
                kind = self.kinds.get(key)
                self.unregister(key)
                if kind is not None:
                    for okey, obj in list(self.objects.items()):
                        if okey[0] == resource(*key) and not obj.deleted:
                            await self._remove(kind, copy.deepcopy(obj.raw))
                continue
            self.register(Kind(
                group, version["name"], names.get("plural", ""), names.get("kind", ""),
                spec.get("scope") == "Namespaced", singular=names.get("singular", ""),
                short_names=names.get("shortNames", []),
                status="status" in (version.get("subresources") or {}),
                schema=(version.get("schema") or {}).get("openAPIV3Schema"),
                columns=version.get("additionalPrinterColumns", []), custom=True))
        if not deleted and not crd.get("status", {}).get("conditions"):
            # Established at once (a real API server takes a moment), observable as in a cluster.
            conditions = [{"type": t, "status": "True", "reason": r, "message": m,
                           "lastTransitionTime": now_rfc3339()}
                          for t, r, m in [("NamesAccepted", "NoConflicts", "no conflicts found"),
                                          ("Established", "InitialNamesAccepted", "the initial names have been accepted")]]
            crd["status"] = {"conditions": conditions, "acceptedNames": names, "storedVersions":
                             [v["name"] for v in spec.get("versions", []) if v.get("storage")]}
            key = self._key(self.kinds[CRD], None, crd["metadata"]["name"])
            crd["metadata"]["resourceVersion"] = self._next_rv()
            self.objects[key].history.append(copy.deepcopy(crd))
            await self._emit(self.kinds[CRD], "MODIFIED", crd)

    # -- verbs -------------------------------------------------------------------------------

    def _list(self, request, kind: Kind) -> dict:
        listed = self._plain_list(request, kind)
        if "as=Table" in header(request, "Accept") and kind.columns:
            return self._table(kind, listed["items"])
        return listed

    def _plain_list(self, request, kind: Kind) -> dict:
        items = []
        for (res, namespace, _), obj in self.objects.items():
            if res != resource(kind.group, kind.version, kind.plural) or obj.deleted:
                continue
            if request.namespace is not None and namespace != request.namespace:
                continue
            raw = copy.deepcopy(obj.raw)
            if self._selected(request, raw):
                items.append(raw)
        items.sort(key=lambda o: (o["metadata"].get("namespace") or "", o["metadata"]["name"]))
        return {"kind": f"{kind.kind}List", "apiVersion": kind.api_version,
                "metadata": {"resourceVersion": str(self.rv)}, "items": items}

    def _table(self, kind: Kind, items: list) -> dict:
        """Server-side printing, so `kubectl get pns` shows the CRD's printer columns."""
        columns = [{"name": "Name", "type": "string", "format": "name", "description": "", "priority": 0}]
        columns += [{"name": c["name"], "type": c.get("type", "string"), "format": c.get("format", ""),
                     "description": c.get("description", ""), "priority": c.get("priority", 0)}
                    for c in kind.columns]
        def cell(obj: dict, column: dict) -> Any:
            value = json_path(obj, column["jsonPath"])
            if column.get("type") == "date" and isinstance(value, str):  # shown as an age
                then = datetime.datetime.strptime(value[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.UTC)
                secs = int((datetime.datetime.now(tz=datetime.UTC) - then).total_seconds())
                return f"{secs}s" if secs < 120 else f"{secs // 60}m" if secs < 7200 else f"{secs // 3600}h"
            return value

        rows = [{"cells": [o["metadata"]["name"]] + [cell(o, c) for c in kind.columns],
                 "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                            "metadata": o["metadata"]}} for o in items]
        return {"kind": "Table", "apiVersion": "meta.k8s.io/v1",
                "metadata": {"resourceVersion": str(self.rv)}, "columnDefinitions": columns, "rows": rows}

    @staticmethod
    def _selected(request, obj: dict) -> bool:
        return (label_selector_matches(request.params.get("labelSelector", ""),
                                       obj.get("metadata", {}).get("labels") or {})
                and field_selector_matches(request.params.get("fieldSelector", ""), obj))

    def _new_object(self, request, kind: Kind, body: dict) -> dict:
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name"):
            if meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            else:
                raise ApiError(422, "Invalid", f"{kind.kind}.{kind.group} is invalid: metadata.name: Required value")
        if kind.namespaced:
            namespace = request.namespace or meta.get("namespace")
            if meta.get("namespace") and request.namespace and meta["namespace"] != request.namespace:
                raise ApiError(400, "BadRequest", "the namespace of the provided object does not match the namespace sent on the request")
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        obj["apiVersion"], obj["kind"] = kind.api_version, kind.kind
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        for field in ("resourceVersion", "deletionTimestamp", "managedFields", "selfLink"):
            meta.pop(field, None)
        if kind.custom or kind.plural == "customresourcedefinitions":
            meta["generation"] = 1
        if kind.status and kind.plural != "customresourcedefinitions":
            obj.pop("status", None)  # the status subresource is written through /status only
        apply_defaults(obj, kind.schema)
        return obj

    async def _create(self, request, kind: Kind, body: dict, manager: str | None = None) -> dict:
        obj = self._new_object(request, kind, body)
        meta = obj["metadata"]
        if self._current(kind, meta.get("namespace"), meta["name"]) is not None:
            raise ApiError(409, "AlreadyExists", f'{kind.qualified()} "{meta["name"]}" already exists',
                           {"name": meta["name"], "group": kind.group, "kind": kind.plural})
        key = self._key(kind, meta.get("namespace"), meta["name"])
        manager = manager or self._manager(request)
        self.owners[key] = {manager: set(owned_paths(obj))}
        return await self._store(kind, obj, "ADDED")

    @staticmethod
    def _manager(request) -> str:
        """The field manager of a write; ownership is kept apart per subresource, as the API
        server's managedFields do."""
        agent = header(request, "User-Agent", "unknown").split("/")[0]
        manager = request.params.get("fieldManager") or agent
        return f"{manager}|{request.subresource}" if request.subresource else manager

    def _commit_update(self, request, kind: Kind, old: dict, new: dict, subresource: str | None) -> dict:
        """The API server's rules for any write to an existing object; returns the new object."""
        meta = new.setdefault("metadata", {})
        for field in ("name", "namespace", "uid", "creationTimestamp", "deletionTimestamp",
                      "deletionGracePeriodSeconds", "generation"):
            if field in old["metadata"]:
                meta[field] = old["metadata"][field]
            else:
                meta.pop(field, None)
        new["apiVersion"], new["kind"] = kind.api_version, kind.kind
        if kind.status and kind.plural != "customresourcedefinitions":
            if subresource == "status":  # only the status changes through /status
                new = {**copy.deepcopy(old), "status": new.get("status")}
                if new["status"] is None:
                    new.pop("status")
            else:  # and never through the main resource
                new.pop("status", None)
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
        apply_defaults(new, kind.schema)
        if old["metadata"].get("deletionTimestamp"):
            added = set(new["metadata"].get("finalizers") or []) - set(old["metadata"].get("finalizers") or [])
            if added:
                raise ApiError(422, "Forbidden", f"no new finalizers can be added if the object is being deleted, found new finalizers {sorted(added)}")
        spec_of = lambda o: {k: v for k, v in o.items() if k not in ("metadata", "status", "apiVersion", "kind")}
        if "generation" in old["metadata"] and spec_of(old) != spec_of(new):
            new["metadata"]["generation"] = old["metadata"]["generation"] + 1
        return new

    def _track_update(self, key: tuple, manager: str, old: dict, new: dict) -> None:
        """Non-apply writes take over the fields they change; removed fields lose their owners."""
        before, after = owned_paths(old), owned_paths(new)
        owners = self.owners.setdefault(key, {})
        changed = {p for p, v in after.items() if before.get(p, KeyError) != v}
        for mgr, paths in owners.items():
            paths -= changed
            paths &= set(after)
        owners.setdefault(manager, set()).update(changed)

    async def _finish_update(self, kind: Kind, key: tuple, old: dict, new: dict) -> dict:
        comparable = lambda o: {**o, "metadata": {k: v for k, v in o["metadata"].items() if k != "resourceVersion"}}
        if comparable(old) == comparable(new):
            return old  # a no-op write changes nothing, not even the resourceVersion
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            return await self._remove(kind, new)
        return await self._store(kind, new, "MODIFIED")

    async def _replace(self, request, kind: Kind, body: dict) -> dict:
        old = self._current(kind, request.namespace, request.name, must=True)
        expected = body.get("metadata", {}).get("resourceVersion")
        if expected and expected != old["metadata"]["resourceVersion"]:
            raise self._conflict(kind, request.name)
        new = self._commit_update(request, kind, old, copy.deepcopy(body), request.subresource)
        key = self._key(kind, request.namespace, request.name)
        self._track_update(key, self._manager(request), old, new)
        return await self._finish_update(kind, key, old, new)

    @staticmethod
    def _conflict(kind: Kind, name: str) -> ApiError:
        return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {kind.qualified()} "{name}": '
                        "the object has been modified; please apply your changes to the latest version and try again",
                        {"name": name, "group": kind.group, "kind": kind.plural})

    async def _patch(self, request, kind: Kind) -> dict:
        ctype = header(request, "Content-Type").split(";")[0].strip()
        if ctype == "application/apply-patch+yaml":
            return await self._apply(request, kind, self._body(request))
        old = self._current(kind, request.namespace, request.name, must=True)
        try:
            patch = json.loads(request.text)
        except ValueError as e:
            raise ApiError(400, "BadRequest", f"the body of the request cannot be decoded: {e}")
        if ctype == "application/json-patch+json":
            if not isinstance(patch, list):
                raise ApiError(400, "BadRequest", "a JSON patch must be a list of operations")
            new = json_patch(old, patch)
        elif ctype in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            # Strategic merge is served as a JSON merge patch: lists are replaced, not merged.
            new = merge_patch(old, patch)
        else:
            raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format: {ctype}")
        expected = new.get("metadata", {}).get("resourceVersion")
        if isinstance(patch, dict) and expected and expected != old["metadata"]["resourceVersion"]:
            raise self._conflict(kind, request.name)
        new = self._commit_update(request, kind, old, new, request.subresource)
        key = self._key(kind, request.namespace, request.name)
        self._track_update(key, self._manager(request), old, new)
        return await self._finish_update(kind, key, old, new)

    async def _apply(self, request, kind: Kind, applied: dict) -> dict:
        """Server-side apply: field ownership per manager, conflicts unless forced, creation."""
        if not request.params.get("fieldManager"):
            raise ApiError(400, "BadRequest", "PATCH, application/apply-patch+yaml requests must provide a fieldManager")
        manager = self._manager(request)
        force = request.params.get("force") in ("true", "1")
        if applied.get("metadata", {}).get("name") not in (None, request.name):
            raise ApiError(400, "BadRequest", "the name of the object does not match the name on the URL")
        applied.setdefault("metadata", {})["name"] = request.name
        old = self._current(kind, request.namespace, request.name)
        if old is None:
            if request.subresource == "status":
                raise ApiError(404, "NotFound", f'{kind.qualified()} "{request.name}" not found')
            return await self._create(request, kind, applied, manager=manager)
        if kind.status and kind.plural != "customresourcedefinitions":
            # Apply to a subresource only sees that subresource's part of the object.
            if request.subresource == "status":
                applied = {"metadata": {"name": request.name}, "status": applied.get("status", {})}
            else:
                applied.pop("status", None)
        key = self._key(kind, request.namespace, request.name)
        owners = self.owners.setdefault(key, {})
        wanted = owned_paths(applied)
        conflicts = [(mgr, p) for mgr, paths in owners.items() if mgr != manager
                     for p in paths & set(wanted) if get_path(old, p) != wanted[p]]
        if conflicts and not force:
            lines = "\n".join(f'- conflict with "{mgr}": .{".".join(map(str, p))}' for mgr, p in conflicts)
            raise ApiError(409, "Conflict", f"Apply failed with {len(conflicts)} conflict(s): {lines}",
                           {"name": request.name, "group": kind.group, "kind": kind.plural,
                            "causes": [{"reason": "FieldManagerConflict", "message": f'conflict with "{mgr}"',
                                        "field": "." + ".".join(map(str, p))} for mgr, p in conflicts]})
        for mgr, p in conflicts:
            owners[mgr].discard(p)
        new = copy.deepcopy(old)
        # Fields this manager applied before and applies no more are removed, unless co-owned.
        for p in owners.get(manager, set()) - set(wanted):
            if not any(p in paths for mgr, paths in owners.items() if mgr != manager):
                delete_path(new, p)
        new = merge_patch(new, {k: v for k, v in applied.items() if k not in ("apiVersion", "kind")})
        new = self._commit_update(request, kind, old, new, request.subresource)
        owners[manager] = set(wanted)
        return await self._finish_update(kind, key, old, new)

    async def _delete(self, request, kind: Kind) -> dict:
        old = self._current(kind, request.namespace, request.name, must=True)
        options = {}
        if request.text and request.text.strip():
            options = self._body(request)
        expected = (options.get("preconditions") or {}).get("resourceVersion")
        if expected and expected != old["metadata"]["resourceVersion"]:
            raise self._conflict(kind, request.name)
        if old["metadata"].get("finalizers"):
            if old["metadata"].get("deletionTimestamp"):
                return old
            new = copy.deepcopy(old)
            new["metadata"]["deletionTimestamp"] = now_rfc3339()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            return await self._store(kind, new, "MODIFIED")
        return await self._remove(kind, old)

    async def _watch(self, request, kind: Kind) -> aiohttp.web.StreamResponse:
        params = request.params
        since = params.get("resourceVersion", "")
        bookmarks = params.get("allowWatchBookmarks") == "true"
        timeout = float(params.get("timeoutSeconds") or 1800)
        kind_key = (kind.group, kind.version, kind.plural)
        queue: asyncio.Queue = asyncio.Queue()
        initial: list[dict] = []
        async with self.state_lock:
            self.watchers.add(queue)
            if params.get("sendInitialEvents") == "true":
                # Watch-list (what kubectl's informers use): the current state as ADDED events,
                # then a bookmark that says the initial events are over.
                listed = self._plain_list(request, kind)
                initial = [{"type": "ADDED", "object": o} for o in listed["items"]]
                initial.append({"type": "BOOKMARK", "object": {
                    "kind": kind.kind, "apiVersion": kind.api_version,
                    "metadata": {"resourceVersion": listed["metadata"]["resourceVersion"],
                                 "annotations": {"k8s.io/initial-events-end": "true"}}}})
            elif since in ("", "0"):
                initial = [{"type": "ADDED", "object": o} for o in self._plain_list(request, kind)["items"]]
            else:
                try:
                    since_rv = int(since)
                except ValueError:
                    raise ApiError(400, "BadRequest", f"invalid resourceVersion {since!r}")
                oldest = self.log[0][0] if self.log else self.rv + 1
                if since_rv < oldest - 1 and since_rv < self.rv:
                    self.watchers.discard(queue)
                    gone = ApiError(410, "Expired", f"too old resource version: {since_rv} ({oldest - 1})")
                    initial = [{"type": "ERROR", "object": gone.status()}]
                else:
                    for event in self.log:
                        if event[0] > since_rv:
                            queue.put_nowait(event)
        raw = request._raw_request
        response = aiohttp.web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        await response.prepare(raw)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            for event in initial:
                await response.write(json.dumps(event).encode() + b"\n")
            if initial and initial[0]["type"] == "ERROR":
                return response
            while (left := deadline - loop.time()) > 0:
                try:
                    rv, key, type_, obj = await asyncio.wait_for(queue.get(), timeout=min(left, 5.0))
                except asyncio.TimeoutError:
                    if bookmarks:
                        mark = {"kind": kind.kind, "apiVersion": kind.api_version,
                                "metadata": {"resourceVersion": str(self.rv)}}
                        await response.write(json.dumps({"type": "BOOKMARK", "object": mark}).encode() + b"\n")
                    continue
                if key != kind_key:
                    continue
                namespace = obj["metadata"].get("namespace")
                if request.namespace is not None and namespace != request.namespace:
                    continue
                if request.name is not None and obj["metadata"]["name"] != request.name:
                    continue
                if not self._selected(request, obj):
                    continue
                await response.write(json.dumps({"type": type_, "object": obj}).encode() + b"\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.watchers.discard(queue)
        return response


async def serve(host: str = "127.0.0.1", port: int = 0):
    """Starts an emulator on `host:port`; returns (emulator, server) already entered."""
    emulator = RealisticEmulator()
    await emulator.__aenter__()
    server = kmock.Server(emulator, host=host, port=port)
    await server.__aenter__()
    return emulator, server
