"""``ecluse images build`` — the Debian base image, and the workspace and hub images FROM it.

``debootstrap --variant=minbase bookworm`` against the Debian mirror this host
already uses (no container registry needed), imported into the Docker engine
as ``ecluse/base:bookworm-<key>``; the root filesystem is cached under
``$ECLUSE_CACHE_DIR`` (default ``~/.cache/ecluse``) and reused while its inputs
are unchanged; then ``images/workspace`` and ``images/hub`` are built FROM it
(ecluse.sandbox.images), each reused while its inputs are unchanged. With
``--engine-dir`` a ``dockerd`` of our own is started for
the build and stopped afterwards (its data directory, holding the image, is kept).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time

from ..sandbox import SandboxError, images
from ..sandbox.engine import Dockerd

IMAGES = ("workspace", "hub")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("images", help="build the container images (docker backend)")
    isub = p.add_subparsers(dest="images_command", metavar="ACTION")
    isub.required = True
    b = isub.add_parser("build", help="build the base image with debootstrap, then the "
                        "workspace and hub images from it (cached by their inputs)")
    where = b.add_mutually_exclusive_group()
    where.add_argument("--docker-url", help="Docker Engine API (default: $DOCKER_HOST, "
                       "else the system socket)")
    where.add_argument("--engine-dir", help="start our own dockerd with its data here "
                       "for the build (kept afterwards)")
    b.add_argument("--image", action="append", choices=IMAGES, dest="images",
                   help="only this image (repeatable; default: all of them)")
    b.add_argument("--mirror", help="Debian mirror (default: the one APT uses on this host)")
    b.set_defaults(func=cmd_build)


def cmd_build(args: argparse.Namespace) -> int:
    def progress(msg: str) -> None:
        print(f"[{time.monotonic() - t0:6.1f}s] {msg}", flush=True)

    t0 = time.monotonic()
    engine = Dockerd(args.engine_dir, temporary=False) if args.engine_dir else None
    try:
        if engine is not None:
            progress(f"starting dockerd in {args.engine_dir}")
            engine.start()
            url = engine.url
        else:
            url = args.docker_url or os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        import docker

        with contextlib.closing(docker.DockerClient(base_url=url, timeout=600)) as client:
            names = [getattr(images, f"{image}_image")(client, mirror=args.mirror,
                                                       progress=progress)
                     for image in args.images or IMAGES]
        progress("done")
        print("\n".join(names))
        return 0
    except SandboxError as e:
        print(f"ecluse images build: {e}\n{e.log_message}", file=sys.stderr)
        return 1
    finally:
        if engine is not None:
            engine.stop()
