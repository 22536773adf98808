#!/usr/bin/env bash
# The full-width ablation for a GPU machine (planned for an H100/H200-class GPU and 16 CPU cores,
# where it is meant to finish within 8 minutes; not yet run on a GPU): the VOC table's stride-8
# baseline (no context) and the released ParseNet (late fusion) at full width from random
# initialisation (the machine cannot download weights), 2 seeds each, trained on the CamVid
# subset sent along with the repository and scored on its val images with mIoU and the context
# statistics, with paired differences (scripts/ablate.py --seeds; README, GPU). The subset is
# .device_data/camvid (git-ignored: carry it, with .whl/, to the GPU machine).
#   bash scripts/device_fidelity.sh [--out DIR] [--device cuda|cuda:N|cpu] [--data DIR]
#        [--iters N] [--seeds 0,1] [--tiny] [--dry-run]
# Settings: recipe=cpu_miniature (AdamW 3e-4, poly, random scaling 0.75–1.25 and flips) at
# width 1, batch 8, 320² crops, bf16 autocast, channels last, --iters iterations (2000).
# --data: a CamVid folder in the SegNet layout (default: .device_data/camvid, made by
# scripts/device_data.sh --train 120 --val 50, about 45 MB; else $PARSENET_CAMVID).
# Writes into --out (default runs/device_fidelity/ of the checkout; a relative --out or --data
# is taken from the current folder): table.md and table.csv (the ablation table),
# device_fidelity.log (everything), summary.txt (machine, settings, time, the table) and runs/
# (the four runs: rerunning the same command resumes them). Exit status 1 when a run fails.
# --device cpu --tiny: width 1/16, 4 iterations, 64² crops, batch 2, float32 — the same path in
# miniature, which tests/test_device_fidelity.py runs. --dry-run: print the overrides and stop.
set -uo pipefail
caller="$PWD"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
out="$repo/runs/device_fidelity"
device="cuda"
data=""
iters=2000
seeds="0,1"
tiny=0
keep=0
dry_run=0
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out="$2"; shift 2 ;;
        --device) device="$2"; shift 2 ;;
        --data) data="$2"; shift 2 ;;
        --iters) iters="$2"; shift 2 ;;
        --seeds) seeds="$2"; shift 2 ;;
        --tiny) tiny=1; shift ;;
        --dry-run) dry_run=1; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [ -n "$data" ]; then
    case "$data" in /*) ;; *) data="$caller/$data" ;; esac
    if [ ! -f "$data/train.txt" ] || [ ! -f "$data/val.txt" ]; then
        echo "error: --data $data: no CamVid train.txt and val.txt there (the SegNet layout)" >&2
        exit 2
    fi
fi
if [ "$tiny" = 1 ]; then
    settings=(model.backbone.width_mult=0.0625 train.batch_size=2 data.augment.crop_size=64
              train.amp=off train.channels_last=false data.num_workers=0)
    [ "$iters" = 2000 ] && iters=4
else
    settings=(model.backbone.width_mult=1.0 train.batch_size=8 data.augment.crop_size=320
              train.amp=bf16 train.channels_last=true data.num_workers=auto)
fi
settings+=("device=$device" "train.max_iters=$iters" "train.eval_every=$iters"
           "train.checkpoint_every=$((iters < 500 ? iters : 500))" train.keep_snapshots=0
           train.num_overlays=0 train.log_every=100)
if [ "$dry_run" = 1 ]; then  # the overrides every run gets (tests compose them), nothing run
    printf '%s\n' data=camvid recipe=cpu_miniature "${settings[@]}"
    exit 0
fi
label="device fidelity"
outputs="summary.txt table.md table.csv"
source "$repo/scripts/device_env.sh"
if [ -n "$data" ]; then
    camvid="$(cd "$data" && pwd)"
    export PARSENET_CAMVID="$camvid"
fi
if [ -z "$camvid" ]; then
    say "error: no CamVid images: run scripts/device_data.sh --train 120 --val 50 (or pass --data)"
    exit 2
fi
if grep -q $'^install[^\t]*\t[1-9]' "$work/steps.tsv"; then
    say "error: the packages could not be installed: $(cut -f4 "$work/steps.tsv" | tr '\n' ' ')"
    exit 1
fi

rows=parsenet-baseline_vgg16-os8_voc12aug,parsenet_vgg16-os8_voc12aug
# What is left of 9 minutes (the device's 10 minutes a command, less the summary and the kill
# grace), at least 2: an interrupted ablation resumes from $out/runs when run again.
limit=$((540 - ($(date +%s) - started)))
[ "$limit" -lt 120 ] && limit=120
step "ablation" "$limit" "2 rows × seeds $seeds" \
    "$PYTHON" scripts/ablate.py voc12 --seeds "$seeds" --rows "$rows" --out "$out/runs" \
    data=camvid recipe=cpu_miniature "${settings[@]}" "data.root=$camvid"
status=$?
for name in table.md table.csv; do
    [ -f "$out/runs/$name" ] && cp "$out/runs/$name" "$out/$name"
done

elapsed=$(($(date +%s) - started))
machine="$("$PYTHON" -c 'import sys, torch
from parsenet.engine.runtime.memory_format import device_name
device = torch.device(sys.argv[1] if torch.cuda.is_available() else "cpu")
print(f"{device_name(device)}, torch {torch.__version__}")' "$device")"
{
    echo "parsenet device fidelity, $(date '+%Y-%m-%d %H:%M:%S')"
    echo "machine: $machine; $(nproc) CPUs"
    echo "mode: device $device$([ "$tiny" = 1 ] && echo ', tiny'); seeds $seeds; $iters iterations; CamVid: $camvid ($(grep -c . "$camvid/train.txt") train, $(grep -c . "$camvid/val.txt") val)"
    echo "settings: recipe=cpu_miniature ${settings[*]}"
    echo "time: $elapsed s$([ "$tiny" = 0 ] && [ "${device#cuda}" != "$device" ] && { [ "$elapsed" -le 480 ] && echo ' (within 8 minutes)' || echo ' (over 8 minutes)'; })"
    echo "status: $([ "$status" = 0 ] && echo 'every run finished' || echo "ablate.py failed (exit status $status; see device_fidelity.log)")"
    echo
    [ -f "$out/table.md" ] && cat "$out/table.md"
} > "$out/summary.txt"
tee -a "$log" < "$out/summary.txt"
[ "$status" = 0 ] || exit 1
