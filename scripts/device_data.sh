#!/usr/bin/env bash
# Copy a small subset of CamVid (60 train + 20 val pairs, evenly spread over each split's list)
# into .device_data/camvid (ignored by git), for the GPU machine, which sees only the repository:
# the device check's loader test and the benchmark's trainer run on these real images.
#   bash scripts/device_data.sh [--source DIR] [--dest DIR] [--train N] [--val N]
# --source defaults to $PARSENET_CAMVID, else ../shared/datasets/camvid (the SegNet layout:
# train/, trainannot/, val/, valannot/, train.txt, val.txt). About 25 MB of PNGs.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source_dir="${PARSENET_CAMVID:-$repo/../shared/datasets/camvid}"
dest="$repo/.device_data/camvid"
counts=(train 60 val 20)
while [ $# -gt 0 ]; do
    case "$1" in
        --source) source_dir="$2"; shift 2 ;;
        --dest) dest="$2"; shift 2 ;;
        --train) counts[1]="$2"; shift 2 ;;
        --val) counts[3]="$2"; shift 2 ;;
        -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
        *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
for split in train val; do
    if [ ! -f "$source_dir/$split.txt" ]; then
        echo "error: $source_dir/$split.txt not found; pass --source (the CamVid folder of the SegNet release)" >&2
        exit 2
    fi
done

rm -rf "$dest.partial"
mkdir -p "$dest.partial"
for index in 0 2; do
    split="${counts[$index]}"
    wanted="${counts[$((index + 1))]}"
    mkdir -p "$dest.partial/$split" "$dest.partial/${split}annot"
    # Every k-th line, so the subset spans the split's sequences; lines keep the release's form
    # (IMAGE_PATH LABEL_PATH: the loader reads only each path's folder and file name).
    awk -v want="$wanted" 'NF { lines[n++] = $0 }
        END { step = n / want; if (step < 1) step = 1
              for (i = 0; i < want && int(i * step) < n; i++) print lines[int(i * step)] }' \
        "$source_dir/$split.txt" > "$dest.partial/$split.txt"
    while read -r image label; do
        cp "$source_dir/$(basename "$(dirname "$image")")/$(basename "$image")" "$dest.partial/$split/"
        cp "$source_dir/$(basename "$(dirname "$label")")/$(basename "$label")" "$dest.partial/${split}annot/"
    done < "$dest.partial/$split.txt"
    echo "device data: $(wc -l < "$dest.partial/$split.txt") $split pairs"
done
if [ -f "$source_dir/README.md" ]; then
    cp "$source_dir/README.md" "$dest.partial/README.md"  # where the images come from, their terms
fi
rm -rf "$dest"
mv "$dest.partial" "$dest"
echo "device data: $dest ($(du -sh "$dest" | cut -f1)); the device check reads it (carry .device_data)"
