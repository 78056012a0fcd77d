"""``ecluse-hub`` / ``python -m ecluse.hub``: jupyterhub without the IRI grammar."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jupyterhub

PROBE = """
import json, sys
from ecluse.hub import main
try:
    main(["--version"])
except SystemExit as exc:
    code = exc.code
import jupyterhub.app  # what the hub imports at start, jupyter_events included
print(json.dumps({"exit": code, "events": "jupyter_events" in sys.modules,
                  "grammar": sys.modules.get("rfc3987_syntax") is not None}))
"""


def test_hub_command_skips_the_iri_grammar():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert jupyterhub.__version__ in out.stdout
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res == {"exit": 0, "events": True, "grammar": False}


def test_module_and_script_run_the_same_main():
    out = subprocess.run([sys.executable, "-m", "ecluse.hub", "--version"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == jupyterhub.__version__, out.stderr
    script = Path(sys.executable).parent / "ecluse-hub"
    assert "from ecluse.hub import main" in script.read_text()
