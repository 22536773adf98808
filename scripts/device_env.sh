# Sourced by scripts/device_check.sh and scripts/device_fidelity.sh (not run on its own): what
# both need on the GPU machine, which has no network and sees only the repository. Expects repo,
# out (the --out folder), label (the script's name in messages, which also names its log and
# scratch folder) and outputs (the files of --out the script rewrites). Sets PYTHON (default
# .venv/bin/python, else python3), started, log, work (a scratch folder with steps.tsv; the script
# removes it), defines say and step, installs the wheels of .whl/ and the checkout where they are
# missing, and sets camvid (and PARSENET_CAMVID) to the first CamVid folder found:
# .device_data/camvid, $PARSENET_CAMVID, ../shared/datasets/camvid.
PYTHON="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"
started="$(date +%s)"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
log="$out/${label// /_}.log"
: > "$log"
for output in $outputs; do rm -f "$out/$output"; done
work="$(mktemp -d "${TMPDIR:-/tmp}/parsenet_${label// /_}.XXXXXX")"
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
if ! "$PYTHON" -c 'import parsenet.configs' 2>/dev/null; then
    step "install parsenet" 60 "pip install -e . (no dependencies)" \
        "$PYTHON" -m pip install --no-deps --no-build-isolation --no-index -e "$repo"
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

