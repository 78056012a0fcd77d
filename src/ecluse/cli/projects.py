"""``ecluse projects list|show``: the projects, their datasets, quotas and members."""

from __future__ import annotations

import argparse
import json

from ..config import load_settings
from ..directory import Directory, DirectoryError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("projects", help="list projects, their datasets, quotas and members")
    p.add_argument("--config", help="config file (default: $ECLUSE_CONFIG or config/ecluse.yaml)")
    p.add_argument("--state-dir", help="state directory (overrides the config)")
    psub = p.add_subparsers(dest="projects_command", metavar="ACTION")
    psub.required = True
    ls = psub.add_parser("list", help="one line per project")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)
    show = psub.add_parser("show", help="a project's datasets, quota, policy and LDAP members")
    show.add_argument("slug")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_show)


def cmd_list(args: argparse.Namespace) -> int:
    settings = load_settings(args.config, state_dir=args.state_dir)
    rows = [
        {"slug": slug, "title": p.title, "ldap_group": p.ldap_group,
         "datasets": [d.name for d in p.datasets]}
        for slug, p in settings.projects.items()
    ]
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    for r in rows:
        print(f"{r['slug']:<20} {r['ldap_group']:<24} {', '.join(r['datasets']):<30} {r['title']}")
    return 0


def members(settings, slug: str) -> list[str]:
    """Members of a project's LDAP group."""
    return Directory(settings.ldap).group_members(settings.projects[slug].ldap_group)


def cmd_show(args: argparse.Namespace) -> int:
    settings = load_settings(args.config, state_dir=args.state_dir)
    if args.slug not in settings.projects:
        print(f"ecluse projects: no project {args.slug!r}; known: "
              + ", ".join(settings.projects))
        return 2
    p = settings.projects[args.slug]
    try:
        who: list[str] | str = members(settings, args.slug)
    except DirectoryError as e:
        who = f"(directory unavailable: {e})"
    data = {
        "slug": p.slug,
        "title": p.title,
        "ldap_group": p.ldap_group,
        "members": who,
        "datasets": [{"name": d.name, "path": str(d.path), "exists": d.path.exists()}
                     for d in p.datasets],
        "quota": p.quota.model_dump(),
        "disclosure": settings.policy_for(p.slug).model_dump(),
    }
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return 0
    print(f"{p.title} ({p.slug}), LDAP group {p.ldap_group}")
    print(f"  members:  {', '.join(who) if isinstance(who, list) else who}")
    for d in data["datasets"]:
        print(f"  dataset:  {d['name']} -> {d['path']}{'' if d['exists'] else '  (MISSING)'}")
    q = p.quota
    print(f"  quota:    {q.cpu:g} CPU, {q.memory // 2**20} MiB, disk {q.disk // 2**30} GiB, "
          f"{q.dask_workers} Dask workers, {q.pids} processes")
    print(f"  policy:   {data['disclosure']}")
    return 0
