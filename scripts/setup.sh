#!/usr/bin/env bash
# Create .venv (Python >= 3.10) and install parsenet with its test tools, once; later runs only
# reinstall when setup.cfg changed. PYTHON picks the interpreter (default python3).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "error: parsenet needs Python >= 3.10; set PYTHON=/path/to/python3.11" >&2
    exit 2
fi
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $("$PYTHON" --version)"
    if ! "$PYTHON" -m venv .venv; then
        rm -rf .venv
        echo "error: '$PYTHON -m venv' failed; install the venv module (Debian/Ubuntu: apt install python3-venv)" >&2
        exit 2
    fi
fi
stamp=.venv/.parsenet-setup
wanted="$(sha1sum setup.cfg | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    echo "setup: installing parsenet and its dependencies into .venv (PyTorch is large: minutes)"
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e ".[test]"
    echo "$wanted" > "$stamp"
fi
