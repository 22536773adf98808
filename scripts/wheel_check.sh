#!/usr/bin/env bash
# Build the wheel, install it (with its dependencies) into a fresh virtual environment outside the
# repository, and run parsenet-train (2 iterations) → parsenet-eval → parsenet-predict from another
# directory: the installed package must find its configs without a checkout. CI runs this.
# WORK picks the scratch folder (default: a new temporary one, removed at the end).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
work="${WORK:-$(mktemp -d)}"
[ -n "${WORK:-}" ] || trap 'rm -rf "$work"' EXIT
mkdir -p "$work"

echo "wheel check: building the wheel"
"$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$work/dist" "$repo"
wheel="$(ls "$work"/dist/parsenet-*.whl)"
echo "wheel check: installing $(basename "$wheel") into a fresh venv (dependencies included)"
"$PYTHON" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet "$wheel"

cd "$work"  # not the repository: nothing may be read from the checkout
bin="$work/venv/bin"
installed="$("$bin/python" -c 'import parsenet, pathlib; print(pathlib.Path(parsenet.__file__).parent)')"
case "$installed" in
    "$work"/venv/*) ;;
    *) echo "error: parsenet imported from $installed, not from the fresh venv" >&2; exit 1 ;;
esac
tiny=(model.backbone.width_mult=0.0625 data.num_train=8 data.num_val=3 data.height=24 data.width=64
      data.num_workers=0 paths.data_root="$work/data")
"$bin/parsenet-train" "${tiny[@]}" optim=adamw train.max_iters=2 train.batch_size=2 \
    train.num_overlays=0 hydra.run.dir="$work/run"
"$bin/parsenet-eval" checkpoint="$work/run/checkpoints/last.pt" hydra.run.dir="$work/eval"
"$bin/parsenet-predict" checkpoint="$work/run/checkpoints/last.pt" \
    "inputs=$work/data/synthetic/**/*.jpg" hydra.run.dir="$work/predict"
test -s "$work/eval/metrics.json"
test -s "$work/eval/per_image.csv"
grep -q '<table id="classes">' "$work/eval/report.html"  # the templates came with the wheel
test -s "$work/run/report.html"
test -n "$(ls "$work/predict/labels")"
echo "wheel check: passed (train → eval → predict from $work with the installed wheel)"
