#!/bin/sh
# The container recipe's build steps, run by the Dockerfile and, on the machine
# itself, by tests/test_packaging_docker.py (no image can be built in CI).
#
#   packaging/docker/build.sh PREFIX     (from the top of a source tree)
#
# Installs llamatwist and its pinned dependencies (packaging/requirements.txt)
# into a virtual environment at PREFIX.  LLAMATWIST_BACKEND (cpu, cuda, ...)
# and LLAMATWIST_CPU_VARIANT steer the libllama build (see build_native.py).
set -eu
prefix=$1
python3 -m venv "$prefix"
"$prefix/bin/pip" install --disable-pip-version-check -q -c packaging/requirements.txt .
# The installed tree is read-only at run time: twistd's plugin index now.
"$prefix/bin/python" -c 'from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))'
"$prefix/bin/llamatwist" --version
