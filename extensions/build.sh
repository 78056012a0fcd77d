#!/usr/bin/env bash
# Build the Écluse workspace extension (TypeScript → prebuilt JupyterLab extension with
# the JupyterLab builder from npm) and install it, non-editable, into the workspace
# Python environment (.venv: the sandbox mounts that environment read-only, so an
# editable install pointing into the repository would not be visible inside).
#
# Idempotent: does nothing when the installed extension matches the sources.
#   extensions/build.sh            build if needed and install
#   extensions/build.sh --force    rebuild and reinstall
# Environment: PY (default: <repo>/.venv/bin/python), NPM (default: npm).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
PKG=$HERE/ecluse-workspace
PY=${PY:-$REPO/.venv/bin/python}
NPM=${NPM:-npm}
BIN=$(dirname "$PY")
STAMP_NAME=.ecluse-workspace-build

cd "$PKG"
sources=(package.json tsconfig.json pyproject.toml src/*.ts style/* ecluse_workspace/*.py
         ecluse_workspace/locale/*/LC_MESSAGES/*.json)
digest=$(cat "${sources[@]}" | sha256sum | cut -d' ' -f1)
prefix=$("$PY" -c 'import sys; print(sys.prefix)')
installed_stamp="$prefix/share/jupyter/labextensions/@ecluse/workspace/$STAMP_NAME"

if [[ "${1:-}" != "--force" && -f "$installed_stamp" && "$(cat "$installed_stamp")" == "$digest" ]] \
   && "$PY" -c 'import ecluse_workspace' 2>/dev/null; then
  echo "ecluse-workspace: up to date"
  exit 0
fi

# 1. node dependencies (the JupyterLab builder, TypeScript, the @jupyterlab packages)
if [[ ! -d node_modules/@jupyterlab/builder || package.json -nt node_modules/.package-lock.json ]]; then
  "$NPM" install --no-audit --no-fund --loglevel=error
fi

# 2. TypeScript, then the prebuilt (federated) extension into ecluse_workspace/labextension
rm -rf lib tsconfig.tsbuildinfo ecluse_workspace/labextension
node_modules/.bin/tsc
# the JupyterLab builder (npm) against the installed JupyterLab's core packages, so the
# shared modules match the JupyterLab the workspace runs
core=$("$PY" -c 'import jupyterlab, os; print(os.path.join(os.path.dirname(jupyterlab.__file__), "staging"))')
node node_modules/@jupyterlab/builder/lib/build-labextension.js --core-path "$core" .

# 3. the Python package (server extension + the built assets as data files)
"$PY" -m pip install -q --no-build-isolation --no-deps --force-reinstall "$PKG"
rm -rf build ./*.egg-info
echo "$digest" > "$installed_stamp"
echo "ecluse-workspace: built and installed into $prefix"
