"""A Kubernetes API server of the tests' own, and the API's models as a schema check.

No cluster runs on these machines. :class:`RecordingApiServer` is a small
aiohttp server on loopback (its own thread and event loop) that answers the
calls the ``kubernetes`` sandbox backend makes — create, get, list, replace
and delete of namespaces, pods, jobs, persistent volume claims, network
policies, resource quotas, limit ranges and config maps, and a pod's log — keeps the
objects in memory and records every request. Each body it receives is loaded
into the ``kubernetes`` client's models (:func:`model_problems`): an unknown
field or a wrong type is answered ``422``, as a real API server's strict field
validation would. Pods do not run by themselves: the test drives their phase
(:meth:`RecordingApiServer.set_phase`), or sets ``auto_run`` so that a new pod
is ``Running`` with an address at once; a Job gets its pod as the Job
controller would make it.

:func:`kubeconfig` writes a kubeconfig file pointing at the server.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import itertools
import json
import re
import threading
import uuid
from pathlib import Path
from typing import Any

from aiohttp import web

#: (API path part, kind, model) of the objects the server keeps
RESOURCES = {
    "pods": ("Pod", "V1Pod"),
    "persistentvolumeclaims": ("PersistentVolumeClaim", "V1PersistentVolumeClaim"),
    "resourcequotas": ("ResourceQuota", "V1ResourceQuota"),
    "limitranges": ("LimitRange", "V1LimitRange"),
    "networkpolicies": ("NetworkPolicy", "V1NetworkPolicy"),
    "jobs": ("Job", "V1Job"),
    "configmaps": ("ConfigMap", "V1ConfigMap"),
    "namespaces": ("Namespace", "V1Namespace"),
}


# ----------------------------------------------------------------- the models

_LIST_RE = re.compile(r"^[Ll]ist\[(.+)\]$")
_DICT_RE = re.compile(r"^(?:dict\((\w+), (.+)\)|Dict\[(\w+), (.+)\])$")
_OPTIONAL_RE = re.compile(r"^Optional\[(.+)\]$")


def model_problems(data: Any, model: str, path: str = "") -> list[str]:
    """Where ``data`` (camelCase, as sent to the API) does not fit the ``kubernetes``
    client's model ``model`` (e.g. ``V1Pod``): unknown fields, wrong types, missing
    required fields. Empty when it fits."""
    import kubernetes.client.models as models

    out: list[str] = []
    if data is None:
        return out
    m = _OPTIONAL_RE.match(model)
    if m:
        return model_problems(data, m.group(1), path)
    m = _LIST_RE.match(model)
    if m:
        if not isinstance(data, list):
            return [f"{path or '.'}: {type(data).__name__}, expected a list"]
        for i, item in enumerate(data):
            out += model_problems(item, m.group(1), f"{path}[{i}]")
        return out
    m = _DICT_RE.match(model)
    if m:
        if not isinstance(data, dict):
            return [f"{path or '.'}: {type(data).__name__}, expected a mapping"]
        for k, v in data.items():
            out += model_problems(v, m.group(2) or m.group(4), f"{path}.{k}")
        return out
    primitive = {"str": str, "int": int, "float": (int, float), "bool": bool,
                 "object": object, "datetime": str, "date": str,
                 "bytes": str, "bytearray": str}  # base64 in JSON
    if model in primitive:
        ok = isinstance(data, primitive[model]) and not (
            model in ("int", "float") and isinstance(data, bool))
        return [] if ok else [f"{path or '.'}: {data!r} is not {model}"]
    cls = getattr(models, model)
    if not isinstance(data, dict):
        return [f"{path or '.'}: {type(data).__name__}, expected {model}"]
    by_json = {v: k for k, v in cls.attribute_map.items()}
    for key, value in data.items():
        if key not in by_json:
            out.append(f"{path}.{key}: unknown field of {model}")
            continue
        out += model_problems(value, cls.openapi_types[by_json[key]], f"{path}.{key}")
    if not out:
        # the model's own constructor checks required fields and enumerations
        from kubernetes.client import ApiClient

        try:
            ApiClient()._ApiClient__deserialize(data, model)
        except (ValueError, TypeError) as e:
            out.append(f"{path or '.'}: {e}")
    return out


def load_model(data: dict[str, Any], model: str) -> Any:
    """``data`` as an instance of the ``kubernetes`` client's ``model`` (AssertionError
    on an unknown field or a wrong type)."""
    from kubernetes.client import ApiClient

    problems = model_problems(data, model)
    assert not problems, f"{model}: " + "; ".join(problems)
    return ApiClient()._ApiClient__deserialize(data, model)


# ------------------------------------------------------------------- selectors

def _matches(labels: dict[str, str], selector: str) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k) == v:
                return False
        elif "=" in term:
            k, v = term.split("=", 1)
            if labels.get(k) != v.lstrip("="):
                return False
        elif labels.get(term) is None:
            return False
    return True


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class RecordingApiServer:
    """The Kubernetes API calls of the sandbox backend, answered from memory and recorded.

    ``objects[(resource, namespace, name)]`` holds what was created;
    ``requests`` is every ``(method, path, query, body)`` received;
    ``logs[(namespace, pod)]`` is what a pod "printed" (set by the test).
    """

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []
        self.logs: dict[tuple[str, str], str] = {}
        self.auto_run = False
        self.pod_ip: str | None = None  # the address running pods get (default 10.244.0.x)
        self.refused: list[str] = []  # bodies refused by the schema check, why
        self._ips = itertools.count(2)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    # ---------------------------------------------------------------- serving

    def start(self) -> RecordingApiServer:
        ready = threading.Event()

        def serve() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._handle)
            self._runner = web.AppRunner(app, access_log=None)
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            self._loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self._runner.cleanup())
            self._loop.close()

        self._thread = threading.Thread(target=serve, name="kube-api", daemon=True)
        self._thread.start()
        if not ready.wait(30):
            raise RuntimeError("the test Kubernetes API server did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)
            self._thread = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --------------------------------------------------------------- driving

    def pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get(("pods", namespace, name))

    def pods(self, selector: str = "") -> list[dict[str, Any]]:
        with self._lock:
            return [o for (r, _, _), o in self.objects.items()
                    if r == "pods" and _matches(o["metadata"].get("labels") or {}, selector)]

    def set_phase(self, namespace: str, name: str, phase: str, *, exit_code: int = 0,
                  reason: str | None = None) -> None:
        """What the kubelet would report: ``Running`` (with an address), or
        ``Succeeded``/``Failed`` with the container's exit code (``reason``
        ``OOMKilled`` for a memory kill)."""
        with self._lock:
            pod = self.objects[("pods", namespace, name)]
            self._set_phase(pod, phase, exit_code=exit_code, reason=reason)

    def _set_phase(self, pod: dict[str, Any], phase: str, *, exit_code: int = 0,
                   reason: str | None = None) -> None:
        st = pod.setdefault("status", {})
        st["phase"] = phase
        ctr = pod["spec"]["containers"][0]["name"]
        if phase == "Running":
            st.setdefault("podIP", self.pod_ip or f"10.244.0.{next(self._ips)}")
            st["containerStatuses"] = [{"name": ctr, "ready": True, "restartCount": 0,
                                        "image": "x", "imageID": "x",
                                        "state": {"running": {"startedAt": _now()}}}]
        elif phase in ("Succeeded", "Failed"):
            term = {"exitCode": exit_code, "startedAt": _now(), "finishedAt": _now()}
            if reason:
                term["reason"] = reason
            st["containerStatuses"] = [{"name": ctr, "ready": False, "restartCount": 0,
                                        "image": "x", "imageID": "x",
                                        "state": {"terminated": term}}]
            job = (pod["metadata"].get("labels") or {}).get("job-name")
            if job:
                j = self.objects.get(("jobs", pod["metadata"]["namespace"], job))
                if j is not None:
                    j["status"] = {"succeeded" if phase == "Succeeded" else "failed": 1}

    def calls(self, method: str | None = None, contains: str = "") -> list[tuple]:
        return [r for r in self.requests
                if (method is None or r[0] == method) and contains in r[1]]

    # -------------------------------------------------------------- handling

    @staticmethod
    def _status(code: int, reason: str, message: str) -> web.Response:
        return web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                  "message": message, "reason": reason, "code": code},
                                 status=code)

    async def _handle(self, request: web.Request) -> web.Response:
        body = None
        if request.can_read_body:
            raw = await request.read()
            body = json.loads(raw) if raw else None
        self.requests.append((request.method, request.path, dict(request.query), body))
        with self._lock:
            return self._route(request, body)

    def _route(self, request: web.Request, body: Any) -> web.Response:
        parts = [p for p in request.path.split("/") if p]
        # /api/v1/... or /apis/<group>/<version>/...
        rest = parts[2:] if parts[:1] == ["api"] else parts[3:]
        q = request.query
        if rest == ["pods"] and request.method == "GET":  # every namespace
            return self._list("pods", None, q.get("labelSelector", ""))
        if rest[:1] != ["namespaces"]:
            return self._status(404, "NotFound", f"no route {request.path}")
        if len(rest) <= 2:  # namespaces themselves
            return self._object(request, "namespaces", "", rest[1] if len(rest) == 2 else None,
                                body)
        ns, resource = rest[1], rest[2]
        if resource not in RESOURCES:
            return self._status(404, "NotFound", f"resource {resource} not served")
        if len(rest) == 5 and rest[4] == "log":
            if ("pods", ns, rest[3]) not in self.objects:
                return self._status(404, "NotFound", f'pods "{rest[3]}" not found')
            return web.Response(text=self.logs.get((ns, rest[3]), ""))
        if ("namespaces", "", ns) not in self.objects and not (
                resource == "pods" and request.method == "GET" and len(rest) == 3):
            return self._status(404, "NotFound", f'namespaces "{ns}" not found')
        return self._object(request, resource, ns, rest[3] if len(rest) > 3 else None, body)

    def _list(self, resource: str, ns: str | None, selector: str) -> web.Response:
        kind = RESOURCES[resource][0]
        items = [copy.deepcopy(o) for (r, n, _), o in self.objects.items()
                 if r == resource and (ns is None or n == ns)
                 and _matches(o["metadata"].get("labels") or {}, selector)]
        return web.json_response({"kind": f"{kind}List", "apiVersion": "v1",
                                  "metadata": {}, "items": items})

    def _object(self, request: web.Request, resource: str, ns: str, name: str | None,
                body: Any) -> web.Response:
        kind, model = RESOURCES[resource]
        m = request.method
        if name is None and m == "GET":
            return self._list(resource, ns, request.query.get("labelSelector", ""))
        if name is None and m == "DELETE":  # deletecollection
            sel = request.query.get("labelSelector", "")
            for key in [k for k, o in self.objects.items() if k[0] == resource and k[1] == ns
                        and _matches(o["metadata"].get("labels") or {}, sel)]:
                del self.objects[key]
            return web.json_response({"kind": f"{kind}List", "apiVersion": "v1",
                                      "metadata": {}, "items": []})
        if m in ("POST", "PUT"):
            problems = model_problems(body, model)
            if body.get("kind") != kind:
                problems.append(f"kind {body.get('kind')!r} sent to {resource}")
            if ns and (body.get("metadata") or {}).get("namespace") not in (None, ns):
                problems.append("the body's namespace is not the path's")
            if problems:
                self.refused.append("; ".join(problems))
                return self._status(422, "Invalid", f"{kind}: " + "; ".join(problems))
            oname = body["metadata"]["name"]
            key = (resource, ns, oname)
            if m == "POST" and key in self.objects:
                return self._status(409, "AlreadyExists",
                                    f'{resource} "{oname}" already exists')
            if m == "PUT" and key not in self.objects:
                return self._status(404, "NotFound", f'{resource} "{oname}" not found')
            obj = copy.deepcopy(body)
            meta = obj["metadata"]
            if ns:
                meta["namespace"] = ns
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", _now())
            if m == "POST":
                if resource == "pods":
                    obj["status"] = {"phase": "Pending"}
                    if self.auto_run:
                        self._set_phase(obj, "Running")
                if resource == "persistentvolumeclaims":
                    obj["status"] = {"phase": "Bound"}
            self.objects[key] = obj
            if m == "POST" and resource == "jobs":
                self._job_pod(obj)
            return web.json_response(obj, status=201 if m == "POST" else 200)
        key = (resource, ns, name)
        if key not in self.objects:
            return self._status(404, "NotFound", f'{resource} "{name}" not found')
        if m == "GET":
            return web.json_response(self.objects[key])
        if m == "DELETE":
            obj = self.objects.pop(key)
            if resource == "jobs" and request.query.get("propagationPolicy") in (
                    "Background", "Foreground"):
                for k in [k for k, o in self.objects.items() if k[0] == "pods" and k[1] == ns
                          and (o["metadata"].get("labels") or {}).get("job-name") == name]:
                    del self.objects[k]
            return web.json_response(obj)
        return self._status(405, "MethodNotAllowed", m)

    def _job_pod(self, job: dict[str, Any]) -> None:
        """The pod the Job controller makes from the template."""
        tmpl = copy.deepcopy(job["spec"]["template"])
        ns, jname = job["metadata"]["namespace"], job["metadata"]["name"]
        name = f"{jname}-{uuid.uuid4().hex[:5]}"
        labels = {**(tmpl["metadata"].get("labels") or {}), "job-name": jname,
                  "batch.kubernetes.io/job-name": jname,
                  "controller-uid": job["metadata"]["uid"]}
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": ns, "labels": labels,
                            "annotations": dict(job["metadata"].get("annotations") or {}),
                            "uid": str(uuid.uuid4()), "creationTimestamp": _now()},
               "spec": tmpl["spec"], "status": {"phase": "Pending"}}
        self.objects[("pods", ns, name)] = pod
        if self.auto_run:
            self._set_phase(pod, "Running")


def kubeconfig(path: Path, server: RecordingApiServer) -> Path:
    """A kubeconfig file whose current context is ``server`` (a bearer token of no value)."""
    import yaml

    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": server.url}}],
        "users": [{"name": "hub", "user": {"token": "not-a-secret"}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "hub"}}],
    }))
    return path
