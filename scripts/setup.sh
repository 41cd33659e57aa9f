#!/usr/bin/env bash
# Set up bsviz from a fresh clone: system libraries (root only), a virtual environment
# in .venv, the pinned Python packages and bsviz itself. Safe to run again: it skips
# what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

# Headless OpenGL (OSMesa, EGL) for pyrender, libusb for open3d, glib for OpenCV.
APT_PACKAGES="libusb-1.0-0 libosmesa6 libegl1 libegl-mesa0 libgl1-mesa-dri libgl1 libglib2.0-0 chromium"
missing=$(for p in $APT_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done | xargs)
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing system packages: $missing"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  else
    echo "setup: missing system packages, install them as root: apt-get install $missing" >&2
  fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@" 2>&1 | grep -v "^WARNING: Location" || true; }
echo "setup: installing Python packages into .venv (first time: a few minutes)"
pip install -r requirements.txt
pip install --no-deps -e .
# pyrender pins PyOpenGL 3.1.0, whose OSMesa binding is broken; >= 3.1.7 works. Installed
# last, on its own, because a single resolver pass refuses it.
echo "setup: PyOpenGL 3.1.10 next (pip will note that pyrender asks for 3.1.0: expected)"
pip install "PyOpenGL==3.1.10"
# dash (which open3d pulls in) leaves an unbuilt JupyterLab extension, @plotly/dash-jupyterlab,
# in the environment: JupyterLab then opens with a "Build Recommended" dialog whose build fails
# offline. Nothing here uses dash in JupyterLab, so every such source extension goes (the
# prebuilt ones, widgets and plotly, are in share/jupyter/labextensions and stay).
for tgz in .venv/share/jupyter/lab/extensions/*.tgz; do
  [ -e "$tgz" ] || continue
  echo "setup: removing $tgz, an unbuilt JupyterLab extension (JupyterLab would ask for a build)"
  rm -f "$tgz"
done
# The Khronos glTF validator, which the tests run on our GLB files (skipped without node).
if command -v npm >/dev/null && [ ! -d .tools/node_modules/gltf-validator ]; then
  npm install --silent --no-audit --no-fund --prefix .tools gltf-validator@2.0.0-dev.3.10 \
    >/dev/null 2>&1 || echo "setup: could not install gltf-validator; its test will be skipped" >&2
fi
.venv/bin/python -c "import bsviz.rig.render, torch, mediapipe" \
  || { echo "setup: the environment does not import; see the messages above" >&2; exit 1; }
echo "setup: done (.venv/bin/bsviz)"
