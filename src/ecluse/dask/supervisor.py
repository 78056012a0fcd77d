"""The cluster supervisor: runs *inside* a project sandbox, one per gateway cluster.

Started as ``python -c <this file's source> <control port> -- <scheduler command>``
(the sandbox sees the workspace Python environment, not the Écluse sources,
so this file uses the standard library only). It

* writes the cluster's TLS certificate and key (from the environment) to a
  private ``/tmp/dask-gateway`` (a tmpfs of the sandbox), then drops them from
  the environment;
* runs the Dask scheduler, and Dask workers on demand, as its children — the
  scheduler and every worker of one cluster share one sandbox (same mounts,
  same cgroup, same network namespace): sandboxes cannot reach each other;
* answers the gateway on ``0.0.0.0:<control port>``: one JSON line per
  connection, ``{"token", "op": "start"|"stop"|"status", ...}``; the token
  (``ECLUSE_DASK_CONTROL_TOKEN``) is compared in constant time;
* exits with the scheduler's status when the scheduler ends (idle timeout,
  ``cluster.shutdown()``), stopping the workers first; on SIGTERM it stops
  everything.
"""

import asyncio
import hmac
import json
import os
import signal
import sys

TLS_DIR = "/tmp/dask-gateway"
STOP_GRACE = 5.0


class Supervisor:
    def __init__(self, port, scheduler_cmd):
        self.port = port
        self.scheduler_cmd = scheduler_cmd
        self.token = os.environ.pop("ECLUSE_DASK_CONTROL_TOKEN", "")
        self.workers = {}
        self.scheduler = None
        self.done = asyncio.Event()

    def write_tls(self):
        cert = os.environ.pop("ECLUSE_DASK_TLS_CERT", "")
        key = os.environ.pop("ECLUSE_DASK_TLS_KEY", "")
        os.makedirs(TLS_DIR, mode=0o700, exist_ok=True)
        for name, data in (("dask.crt", cert), ("dask.pem", key)):
            fd = os.open(os.path.join(TLS_DIR, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                         0o600)
            with os.fdopen(fd, "w") as f:
                f.write(data)

    async def start_worker(self, name, cmd, env):
        old = self.workers.get(name)
        if old is not None and old.returncode is None:
            return
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.workers[name] = await asyncio.create_subprocess_exec(*cmd, env=full_env)

    async def stop_proc(self, proc):
        if proc.returncode is not None:
            return
        try:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), STOP_GRACE)
        except (TimeoutError, ProcessLookupError):
            try:
                proc.kill()
            except ProcessLookupError:
                pass
            await proc.wait()

    async def handle(self, reader, writer):
        try:
            line = await asyncio.wait_for(reader.readline(), 10)
            msg = json.loads(line)
            if not hmac.compare_digest(str(msg.get("token", "")), self.token):
                reply = {"error": "forbidden"}
            elif msg["op"] == "start":
                await self.start_worker(str(msg["name"]), [str(a) for a in msg["cmd"]],
                                        {str(k): str(v) for k, v in msg.get("env", {}).items()})
                reply = {"ok": True}
            elif msg["op"] == "stop":
                proc = self.workers.pop(str(msg["name"]), None)
                if proc is not None:
                    await self.stop_proc(proc)
                reply = {"ok": True}
            elif msg["op"] == "status":
                reply = {"alive": {n: (n in self.workers and self.workers[n].returncode is None)
                                   for n in msg.get("names", [])}}
            else:
                reply = {"error": "unknown op"}
        except Exception as e:  # a bad request never takes the cluster down
            reply = {"error": type(e).__name__}
        try:
            writer.write((json.dumps(reply) + "\n").encode())
            await writer.drain()
        finally:
            writer.close()

    async def run(self):
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.done.set)
        self.write_tls()
        server = await asyncio.start_server(self.handle, "0.0.0.0", self.port)
        self.scheduler = await asyncio.create_subprocess_exec(*self.scheduler_cmd)
        waiter = asyncio.ensure_future(self.scheduler.wait())
        stopper = asyncio.ensure_future(self.done.wait())
        await asyncio.wait([waiter, stopper], return_when=asyncio.FIRST_COMPLETED)
        server.close()
        await asyncio.gather(*(self.stop_proc(p) for p in self.workers.values()))
        await self.stop_proc(self.scheduler)
        return self.scheduler.returncode or 0


def main(argv):
    port = int(argv[0])
    cmd = argv[argv.index("--") + 1:]
    return asyncio.run(Supervisor(port, cmd).run())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
