# Sourced by scripts/device_check.sh and scripts/device_fidelity.sh (not run on its own): what
# both need on the GPU machine, which has no network and sees only the repository. Expects repo
# (the current folder), caller (the folder the script was started from: a relative --out is
# taken from there), out (the --out folder), label (the script's name in messages, which also
# names its log and scratch folder), outputs (the files of --out the script rewrites) and keep
# (1: leave the scratch folder). Sets PYTHON (default .venv/bin/python, else python3), started,
# log and work (a scratch folder with steps.tsv, removed at exit unless keep), defines say and
# step, installs the wheels of .whl/ where hydra, omegaconf or albumentations are missing, puts
# the checkout on PYTHONPATH where parsenet is not installed, and sets camvid (and
# PARSENET_CAMVID) to the first CamVid folder found: .device_data/camvid, $PARSENET_CAMVID,
# ../shared/datasets/camvid.
PYTHON="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"
started="$(date +%s)"
case "$out" in /*) ;; *) out="$caller/$out" ;; esac
mkdir -p "$out"
out="$(cd "$out" && pwd)"
log="$out/${label// /_}.log"
: > "$log"
for output in $outputs; do rm -f "$out/$output"; done
work="$(mktemp -d "${TMPDIR:-/tmp}/parsenet_${label// /_}.XXXXXX")"
if [ "$keep" = 1 ]; then
    echo "$label: scratch folder $work (kept)"
else
    trap 'rm -rf "$work"' EXIT
fi
: > "$work/steps.tsv"
export PYTHONUNBUFFERED=1 PYTHONWARNINGS="${PYTHONWARNINGS:-ignore::DeprecationWarning}"

say() { echo "$label: $*" | tee -a "$log"; }

# step NAME SECONDS NOTE COMMAND…: run COMMAND with a time limit (SIGINT first, so pytest still
# writes its report), its output into the log; NAME, exit status, seconds and NOTE to steps.tsv.
step() {
    local name="$1" limit="$2" note="$3" begun status
    shift 3
    begun="$(date +%s)"
    say "$name (at most ${limit} s): $*"
    timeout -s INT -k 20 "$limit" "$@" > "$work/step.out" 2>&1
    status=$?
    cat "$work/step.out" >> "$log"
    if [ "$status" != 0 ]; then
        [ "$status" = 124 ] && note="timed out after ${limit} s" || note="exit status $status"
        say "$name failed ($note); its last lines:"
        tail -n 25 "$work/step.out"
    fi
    printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$(($(date +%s) - begun))" "$note" >> "$work/steps.tsv"
    return "$status"
}

# 1. Packages: the wheels the machine lacks, and the checkout (its configs are a package).
if ! "$PYTHON" -c 'import hydra, omegaconf, albumentations' 2>/dev/null; then
    if ls .whl/*.whl > /dev/null 2>&1; then
        step "install wheels" 60 "$(ls .whl/*.whl | wc -l) wheels from .whl/" \
            "$PYTHON" -m pip install --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$work/site" .whl/*.whl
        export PYTHONPATH="$work/site${PYTHONPATH:+:$PYTHONPATH}"
    else
        printf 'install wheels\t1\t0\thydra, omegaconf or albumentations missing and no .whl/: run scripts/device_wheels.sh where the registry is reachable\n' >> "$work/steps.tsv"
    fi
fi
# The checkout itself: on PYTHONPATH where parsenet is not installed (no pip, no setuptools
# needed; parsenet.config then finds configs/ beside the package).
if ! (cd / && "$PYTHON" -c 'import parsenet.config') 2>/dev/null; then
    export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
fi

# The CamVid images (scripts/device_data.sh makes .device_data/camvid, which travels).
camvid=""
for candidate in "$repo/.device_data/camvid" "${PARSENET_CAMVID:-}" "$repo/../shared/datasets/camvid"; do
    if [ -n "$candidate" ] && [ -f "$candidate/train.txt" ]; then
        camvid="$(cd "$candidate" && pwd)"
        break
    fi
done
[ -n "$camvid" ] && export PARSENET_CAMVID="$camvid"

