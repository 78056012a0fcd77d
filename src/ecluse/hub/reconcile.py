"""Leaving a project reaches running work: the membership reconciler.

A hub-managed service (``ecluse-reconciler``) that every
``hub.revocation_interval`` seconds (default 300) compares each hub user's
projects — their project hub groups and running project workspaces — with
what the directory says now (:class:`ecluse.directory.MembershipResolver`).
For a user who *positively* left a project (the directory answers and does
not list them, or no longer knows them) it

* stops their workspace of that project (``DELETE /users/<u>/servers/<p>``);
* removes them from the project's hub group: every token of theirs loses the
  project's scope at once (the hub resolves a token's scopes against its
  owner's roles at each use), so the airlock and dask-gateway refuse them;
* records ``membership.revoked`` in the audit log, with what it did.

When the directory cannot be reached, nothing is stopped and nothing is
changed (``membership.unverified`` is logged once per round). Dask clusters
are stopped by the gateway's own periodic check and queued batch runs are
refused when they start (both ask the same resolver).

Its hub role (:func:`reconciler_role`) lists users, reads and deletes
servers, and changes the membership of the project groups only.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import requests

from ..auditevents import AuditEvent
from ..config import load_settings
from ..directory import DirectoryError, DirectoryUnavailable, MembershipResolver, projects_of
from ..sandbox.remote import audit_for

SERVICE_NAME = "ecluse-reconciler"
log = logging.getLogger("ecluse.hub.reconcile")


def reconciler_role(settings: Any) -> dict[str, Any]:
    """The service's hub role: least privilege."""
    return {
        "name": SERVICE_NAME,
        "description": "Stop the work of users who left a project (membership reconciler)",
        "scopes": ["list:users", "read:users", "read:servers", "delete:servers",
                   *(f"groups!group={slug}" for slug in sorted(settings.projects))],
        "services": [SERVICE_NAME],
    }


def reconciler_service_spec(settings: Any) -> dict[str, Any]:
    """The ``c.JupyterHub.services`` entry (no URL: it only calls the hub API)."""
    command = [sys.executable, "-m", "ecluse.hub.reconcile",
               f"--interval={settings.hub.revocation_interval}",
               "--state-dir", str(settings.state_dir)]
    if getattr(settings, "config_file", None):
        command += ["--config", str(settings.config_file)]
    env = {}
    pw_env = settings.ldap.bind_password_env
    if pw_env and os.environ.get(pw_env):
        env[pw_env] = os.environ[pw_env]
    return {"name": SERVICE_NAME, "command": command, "environment": env}


class HubAPI:
    """The hub REST calls the reconciler makes, with its service token."""

    def __init__(self, url: str, token: str, timeout: float = 30) -> None:
        self.url = url.rstrip("/")
        self.s = requests.Session()
        self.s.headers["Authorization"] = f"token {token}"
        self.timeout = timeout

    def users(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        offset = 0
        while True:
            r = self.s.get(f"{self.url}/users", params={"offset": offset, "limit": 200},
                           headers={"Accept": "application/jupyterhub-pagination+json"},
                           timeout=self.timeout)
            r.raise_for_status()
            body = r.json()
            items = body["items"] if isinstance(body, dict) else body
            out.extend(items)
            nxt = body.get("_pagination", {}).get("next") if isinstance(body, dict) else None
            if not nxt or not items:
                return out
            offset = nxt["offset"]

    def stop_server(self, user: str, server: str) -> None:
        r = self.s.delete(f"{self.url}/users/{quote(user, safe='')}/servers/"
                          f"{quote(server, safe='')}", json={"remove": False},
                          timeout=self.timeout)
        if r.status_code not in (202, 204, 404):
            r.raise_for_status()

    def leave_group(self, user: str, group: str) -> None:
        r = self.s.delete(f"{self.url}/groups/{quote(group, safe='')}/users",
                          json={"users": [user]}, timeout=self.timeout)
        if r.status_code not in (200, 404):
            r.raise_for_status()


@dataclass
class Round:
    """What one pass did."""

    checked: int = 0
    revoked: list[dict[str, Any]] = field(default_factory=list)
    unverified: list[str] = field(default_factory=list)


def reconcile_once(settings: Any, hub: HubAPI, resolver: Any, audit: Any) -> Round:
    """One pass over the hub's users (see the module docstring)."""
    done = Round()
    for u in hub.users():
        name = u["name"]
        held = {g for g in u.get("groups") or [] if g in settings.projects}
        running = {s for s in (u.get("servers") or {}) if s in settings.projects}
        if not held and not running:
            continue
        done.checked += 1
        try:
            now = set(projects_of(resolver.lookup(name).memberships, settings))
        except DirectoryUnavailable as e:
            done.unverified.append(name)
            log.warning("membership of %s not verified (directory unavailable): %s", name, e)
            continue
        except DirectoryError as e:  # no longer a valid directory user: every project lost
            log.warning("%s is no longer valid in the directory: %s", name, e.reason)
            now = set()
        for slug in sorted((held | running) - now):
            actions = []
            if slug in running:
                hub.stop_server(name, slug)
                actions.append("workspace-stopped")
            if slug in held:
                hub.leave_group(name, slug)
                actions.append("group-left")
            audit.record(AuditEvent.MEMBERSHIP_REVOKED, actor=SERVICE_NAME, project=slug,
                         outcome="success", user=name, actions=actions)
            log.info("%s left project %s: %s", name, slug, ", ".join(actions))
            done.revoked.append({"user": name, "project": slug, "actions": actions})
    return done


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ecluse-reconciler")
    p.add_argument("--config", default=None)
    p.add_argument("--state-dir", default=None)
    p.add_argument("--interval", type=float, default=300)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s %(name)s] %(message)s")
    token, url = os.environ.get("JUPYTERHUB_API_TOKEN"), os.environ.get("JUPYTERHUB_API_URL")
    if not token or not url:
        print("ecluse-reconciler runs as a JupyterHub-managed service: missing "
              "JUPYTERHUB_API_TOKEN or JUPYTERHUB_API_URL", file=sys.stderr)
        return 2
    settings = load_settings(args.config, state_dir=args.state_dir)
    hub = HubAPI(url, token)
    audit = audit_for(settings, "hub")
    while True:
        # a fresh answer each round: the interval is the revocation delay
        resolver = MembershipResolver(settings)
        try:
            done = reconcile_once(settings, hub, resolver, audit)
            if done.revoked or done.unverified:
                log.info("round: %d users checked, %d revoked, %d unverified", done.checked,
                         len(done.revoked), len(done.unverified))
        except requests.RequestException as e:
            log.warning("hub API error, retrying next round: %s", e)
        time.sleep(args.interval)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
