"""``ecluse-singleuser``: the workspace server command, and what it skips."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ecluse.config import load_settings
from ecluse.hub.spawner import EcluseSpawner
from ecluse.hub.workspace import server_config

PROBE = """
import json, sys
from ecluse_workspace.singleuser import main
try:
    main(["--version"])
except SystemExit as exc:
    code = exc.code
import io, logging
import jsonschema
from jupyter_events import EventLogger
# jupyter_events still validates events against their schemas
logger = EventLogger(handlers=[logging.StreamHandler(io.StringIO())])
schema = {"$id": "http://example.org/ecluse/probe", "version": "1",
          "type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
logger.register_event_schema(schema)
try:
    logger.emit(schema_id=schema["$id"], data={"n": "not an int"})
    invalid_refused = False
except jsonschema.ValidationError:
    invalid_refused = True
print(json.dumps({"exit": code, "grammar": "rfc3987_syntax" in sys.modules
                  and sys.modules["rfc3987_syntax"] is not None,
                  "server": "jupyter_server.serverapp" in sys.modules,
                  "invalid_refused": invalid_refused}))
"""


def test_launcher_runs_singleuser_without_the_iri_grammar(workspace_extension):
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res == {"exit": 0, "grammar": False, "server": True, "invalid_refused": True}


def test_spawner_starts_workspaces_with_the_launcher(workspace_extension, tmp_path):
    # the embedded stack's settings: the local backend runs this host's environment
    settings = load_settings(Path(__file__).parents[2] / "config" / "ecluse.yaml",
                             state_dir=tmp_path)
    cmd = EcluseSpawner(settings=settings).workspace_cmd
    # the environment's Python without the user site, running the launcher
    assert Path(cmd[0]) == Path(sys.executable).parent / "python" and cmd[1] == "-s"
    assert Path(cmd[2]).name == "ecluse-singleuser"
    assert os.access(cmd[2], os.X_OK), f"{cmd[2]} missing: run extensions/build.sh"
    # the script is the installed entry point of the workspace extension
    assert "ecluse_workspace.singleuser" in Path(cmd[2]).read_text()


def test_workspace_extension_manager_is_read_only():
    assert server_config(object())["LabApp"]["extension_manager"] == "readonly"
