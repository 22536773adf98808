#!/usr/bin/env bash
# Run where the package registry is reachable: download, as wheels for CPython 3.12 on manylinux
# x86-64, what parsenet needs and the GPU machine lacks, into .whl/ (ignored by git).
# scripts/device_check.sh installs them there (pip --no-index --no-deps --target) when hydra,
# omegaconf or albumentations cannot be imported.
#   bash scripts/device_wheels.sh [--dest DIR] [--verify]
# The GPU machine (Python 3.12, PyTorch 2.11) already has torch, torchvision, numpy, scipy,
# opencv-python-headless, PyYAML, packaging, Pillow, tensorboard, tqdm, onnx, onnxruntime,
# onnxscript and pytest; this fetches the rest, each pinned with --no-deps (versions as in the
# .venv the test suite passes in). antlr4-python3-runtime 4.9.3 (what omegaconf 2.3 needs) exists
# only as a source archive: it is built here into a pure-Python wheel.
# --verify: then check the set with a Python 3.12 (PYTHON312, else python3.12 or pyenv's): in a
# fresh venv holding only stand-ins for the machine's packages, pip must resolve hydra-core and
# albumentations from .whl alone, and they must import from a --target install as on the machine.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$repo/.whl"
verify=0
while [ $# -gt 0 ]; do
    case "$1" in
        --dest) dest="$2"; shift 2 ;;
        --verify) verify=1; shift ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
PYTHON="${PYTHON:-$([ -x "$repo/.venv/bin/python" ] && echo "$repo/.venv/bin/python" || echo python3)}"

# Binary wheels for the machine: albumentations requires opencv-python-headless by name, which
# the machine has, so with --no-deps nothing pulls in a second OpenCV.
WHEELS=(
    hydra-core==1.3.8
    omegaconf==2.3.1
    albumentations==2.0.8
    albucore==0.0.24
    stringzilla==5.3.2
    simsimd==6.5.16
    pydantic==2.14.4
    pydantic-core==2.50.5
    annotated-types==0.8.0
    typing-inspection==0.4.5
    typing-extensions==4.16.0
)
ANTLR=antlr4-python3-runtime==4.9.3
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64
           manylinux1_x86_64)

mkdir -p "$dest"
platform_flags=()
for platform in "${PLATFORMS[@]}"; do platform_flags+=(--platform "$platform"); done
echo "device wheels: downloading ${#WHEELS[@]} wheels for CPython 3.12 into $dest"
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --abi cp312 --abi abi3 --abi none "${platform_flags[@]}" \
    --dest "$dest" "${WHEELS[@]}"
if ! ls "$dest"/antlr4_python3_runtime-4.9.3-*.whl >/dev/null 2>&1; then
    echo "device wheels: building $ANTLR (a source archive only) into a pure-Python wheel"
    "$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$dest" "$ANTLR"
fi
# One version of each package: a second one would stop the install on the machine.
names="$(for wheel in "$dest"/*.whl; do basename "$wheel" | cut -d- -f1 | tr 'A-Z-' 'a-z_'; done)"
if [ -n "$(echo "$names" | sort | uniq -d)" ]; then
    echo "error: $dest holds two versions of: $(echo "$names" | sort | uniq -d | tr '\n' ' ')" >&2
    exit 1
fi
echo "device wheels: $(ls "$dest"/*.whl | wc -l) wheels, $(du -sh "$dest" | cut -f1) in $dest"
[ "$verify" = 1 ] || exit 0

python312="${PYTHON312:-$(command -v python3.12 2>/dev/null || true)}"
if ! "$python312" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null; then
    python312="$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3.12 2>/dev/null | tail -1)"
fi
if [ -z "$python312" ] || [ ! -x "$python312" ]; then
    echo "error: --verify needs a Python 3.12: set PYTHON312=/path/to/python3.12" >&2
    exit 2
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "device wheels: verifying with $("$python312" --version) in a fresh venv"
"$python312" -m venv "$work/venv"
venv="$work/venv/bin/python"
# Stand-ins for what the machine has preinstalled, and parsenet itself (no dependencies). PyTorch
# is left out (the machine has it; its CPU index may not be reachable from here): what is checked
# is that the wheels resolve and import, and compose parsenet's configs.
"$venv" -m pip install --quiet numpy scipy opencv-python-headless PyYAML packaging
"$venv" -m pip install --quiet --no-deps "$repo"
echo "device wheels: pip resolves hydra-core and albumentations from $dest alone:"
"$venv" -m pip install --dry-run --no-index --find-links "$dest" hydra-core albumentations \
    | grep -E '^Would install'
"$venv" -m pip install --quiet --no-index --no-deps --no-compile --target "$work/site" "$dest"/*.whl
cd "$work"  # not the checkout: the installed parsenet, the wheels from --target
PYTHONPATH="$work/site" "$venv" - <<'PY'
import albumentations
import hydra
import omegaconf
import pydantic

from parsenet.config import compose

cfg = compose("train", ["data=camvid", "model=fcn"])
data, model = cfg["data"]["name"], cfg["model"]["name"]
print(
    f"device wheels: verified with Python 3.12: hydra {hydra.__version__}, omegaconf "
    f"{omegaconf.__version__}, albumentations {albumentations.__version__}, pydantic "
    f"{pydantic.VERSION} import from --target; parsenet composes its configs ({data}, {model})"
)
PY
