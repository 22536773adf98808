#!/usr/bin/env bash
# Every GPU check in one command, for a machine with one GPU (planned for 16 CPU cores and an
# H100/H200-class GPU, where it is meant to finish within 8 minutes; not yet run on a GPU):
#   bash scripts/device_check.sh [--out DIR] [--device cuda|cuda:N|cpu] [--tiny] [--keep]
# 1. installs the wheels of .whl/ (scripts/device_wheels.sh) with pip --no-index --no-deps
#    --target when hydra, omegaconf or albumentations cannot be imported, and puts the checkout
#    on PYTHONPATH when parsenet is not installed (scripts/device_env.sh);
# 2. runs the CUDA tests (pytest -m gpu tests/test_gpu.py), each recording what it measured
#    (largest score difference against the CPU and its bound, pixels differing, steps per
#    second, peak memory, the modes seen applied; one bf16 training step per new trunk);
# 3. runs scripts/benchmark.py on the device: GEMM peaks, the model step at 512² batch 8 (full
#    width, bf16, channels last) eager and compiled, the trainer on CamVid images
#    (.device_data/camvid from scripts/device_data.sh, else $PARSENET_CAMVID) against the step and
#    a reference loop, inference at 500×375;
# 4. writes into --out (default runs/device_check/ of the checkout; a relative one is taken
#    from the current folder): device_check.log (everything),
#    benchmark.json, benchmark.md and summary.txt, which ends with one line per check
#    (PASS/FAIL/SKIP, name, what was measured) and is printed at the end. Exit status 1 if any
#    check fails.
# --device cpu --tiny: the same steps in miniature on the CPU, which tests/test_device_check.py
# runs so that this script keeps working: the GPUs hidden, the CPU stands in for the device
# (PARSENET_GPU_TESTS_DEVICE=cpu) in one case of each comparison that needs no other process;
# the benchmark's targets are not judged.
# --keep: keep the scratch folder (run folders, test outputs) and print where it is.
set -uo pipefail
caller="$PWD"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
out="$repo/runs/device_check"
device="cuda"
tiny=0
keep=0
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out="$2"; shift 2 ;;
        --device) device="$2"; shift 2 ;;
        --tiny) tiny=1; shift ;;
        --keep) keep=1; shift ;;
        -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
        *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
# PYTHON, log, work, say, step, the packages (step 1) and $camvid: shared with
# scripts/device_fidelity.sh.
label="device check"
outputs="summary.txt benchmark.json benchmark.md"
source "$repo/scripts/device_env.sh"
export CUBLAS_WORKSPACE_CONFIG="${CUBLAS_WORKSPACE_CONFIG:-:4096:8}"

# 2. The CUDA tests on --device, each appending its figure to figures.jsonl. --device cpu --tiny
# hides the GPUs and runs the stand-in selection with the CPU as the device.
gpu_tests=(tests/test_gpu.py)
if [ "$device" = cpu ] && [ "$tiny" = 1 ]; then
    export CUDA_VISIBLE_DEVICES="" PARSENET_GPU_TESTS_DEVICE=cpu
    gpu_tests=()
    for name in test_float32_logits_equal_the_cpu_logits \
        "test_autocast_agrees_with_float32_and_l2norm_stays_float32[fp16]" \
        "test_parsenet_train_in_each_precision_and_layout[fp16]" \
        "test_parsenet_train_in_each_precision_and_layout[channels_last]" \
        test_exact_resume_with_deterministic_algorithms \
        test_evaluation_gives_the_cpu_confusion_matrix; do
        gpu_tests+=("tests/test_gpu.py::$name")
    done
else
    export PARSENET_GPU_TESTS_DEVICE="$device"
fi
export PARSENET_CHECK_FIGURES="$work/figures.jsonl"
: > "$PARSENET_CHECK_FIGURES"
"$PYTHON" -m pytest -p no:cacheprovider -q -m gpu --collect-only "${gpu_tests[@]}" \
    > "$work/collected.txt" 2>&1
# With pytest-xdist (on the GPU machine), 4 tests at a time, each with a share of the CPUs for
# its comparisons with the CPU; the loader test then runs alone, since it measures data waits.
loader_test=tests/test_gpu.py::test_the_loader_keeps_the_gpu_fed
parallel=()
threads="${OMP_NUM_THREADS:-}"
if [ "$tiny" = 0 ] && "$PYTHON" -c 'import xdist' 2>/dev/null; then
    parallel=(-n 4)
    threads="$(( $(nproc) / 4 > 0 ? $(nproc) / 4 : 1 ))"
fi
step "gpu tests" "$([ "$tiny" = 1 ] && echo 150 || echo 270)" "pytest -m gpu tests/test_gpu.py" \
    env ${threads:+OMP_NUM_THREADS=$threads} "$PYTHON" -m pytest -p no:cacheprovider -m gpu \
    "${gpu_tests[@]}" --deselect "$loader_test" "${parallel[@]}" -rA \
    --junitxml="$work/gpu_tests.xml"
if [ "$tiny" = 0 ]; then
    step "gpu loader test" 60 "pytest -m gpu $loader_test" \
        "$PYTHON" -m pytest -p no:cacheprovider -m gpu "$loader_test" -rA \
        --junitxml="$work/gpu_loader_test.xml"
fi

# 3. The benchmark on the device: eager, then compiled (random weights: nothing to download).
if [ "$tiny" = 1 ]; then
    size=32
    batch=2
    bench=(--device "$device" --width 0.0625 --sizes "$size" --batch "$batch" --repetitions 2
           --warmup 1 --peak-size 256 --amp off --no-channels-last --data synthetic
           --override "data.root=$work/synthetic" --override data.num_train=8
           --override data.num_val=2 --override data.height=24 --override data.width=64
           --override data.num_workers=0 --override "data.augment.crop_size=$size"
           --override model.backbone.pretrained=none)
else
    size=512
    batch=8
    workers="$("$PYTHON" -c 'from parsenet.data.loader import loader_workers; print(loader_workers("auto"))')"
    bench=(--device "$device" --width 1.0 --sizes "$size" --batch "$batch" --repetitions 10
           --warmup 3 --amp bf16 --channels-last --data camvid --override "data.root=$camvid"
           --override "data.num_workers=${workers:-8}" --override "data.augment.crop_size=$size"
           --override model.backbone.pretrained=none)
fi
parts="peak,step,e2e,reference,inference"
if [ "$tiny" = 0 ] && [ -z "$camvid" ]; then
    parts="peak,step,inference"  # no real images: the trainer's lines fail in the summary
fi
step "benchmark eager" 100 "$parts" \
    "$PYTHON" scripts/benchmark.py "${bench[@]}" --parts "$parts" --out "$work/bench_eager"
if [ "$tiny" = 0 ]; then
    step "benchmark compiled" 140 "${parts/,reference/}, torch.compile" \
        "$PYTHON" scripts/benchmark.py "${bench[@]}" --compile --parts "${parts/,reference/}" \
        --out "$work/bench_compiled"
fi

# 4. The summary.
"$PYTHON" - "$work" "$out" "$device" "$tiny" "$started" "$size" "$batch" "$camvid" <<'PY' 2>&1 | tee -a "$log"
import json
import os
import platform
import sys
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

work, out = Path(sys.argv[1]), Path(sys.argv[2])
device, tiny, started = sys.argv[3], sys.argv[4] == "1", float(sys.argv[5])
size, batch, camvid = int(sys.argv[6]), int(sys.argv[7]), sys.argv[8]
on_gpu = device.startswith("cuda")
judged = on_gpu and not tiny  # targets apply to the full-size run on a GPU
checks: list[tuple[str, str, str]] = []


def check(status: str, name: str, figure: str) -> None:
    checks.append((status, name, figure))


def rate(gflops: float) -> str:
    return f"{gflops / 1000:.1f} TFLOP/s" if gflops >= 1000 else f"{gflops:.3g} GFLOP/s"


def target(name: str, met: bool | None, figure: str) -> None:
    if met is None:
        check("FAIL", name, figure or "not measured")
    elif not judged:
        check("SKIP", name, f"{figure} (targets apply at full size on a GPU)")
    else:
        check("PASS" if met else "FAIL", name, figure)


for line in (work / "steps.tsv").read_text().splitlines():
    name, status, seconds, note = line.split("\t")
    if name.startswith("install"):
        check("PASS" if status == "0" else "FAIL", name, f"{note} ({seconds} s)")

# The tests: every collected one gets a line (one that never ran is a failure).
collected = [
    line.split("::")[-1] for line in (work / "collected.txt").read_text().splitlines()
    if "::" in line
]
outcomes: dict[str, tuple[str, str]] = {}
for report in sorted(work.glob("gpu_*.xml")):
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        problem = case.find("failure")
        problem = case.find("error") if problem is None else problem
        skipped = case.find("skipped")
        if problem is not None:
            message = (problem.get("message") or "failed").splitlines()[0]
            outcomes[case.get("name")] = ("FAIL", message[:300])
        elif skipped is not None:
            outcomes[case.get("name")] = ("SKIP", skipped.get("message") or "skipped")
        else:
            outcomes[case.get("name")] = ("PASS", "passed")
figures = {}
for line in (work / "figures.jsonl").read_text().splitlines():
    entry = json.loads(line)
    figures[entry["test"]] = entry["figure"]
if not collected:
    check("FAIL", "gpu tests", "none collected (see device_check.log)")
for name in collected:
    status, message = outcomes.get(name, ("FAIL", "did not run (stopped or timed out)"))
    figure = figures.get(name, message) if status == "PASS" else message
    if status == "FAIL" and name in figures:
        figure = f"{message} [{figures[name]}]"
    check(status, name, figure)

# The benchmark.
reports = {}
for variant in ("eager", "compiled"):
    path = work / f"bench_{variant}" / "benchmark.json"
    if path.is_file():
        reports[variant] = json.loads(path.read_text())
eager = reports.get("eager", {}).get("results", {})
if not reports:
    check("FAIL", "benchmark", "no report (see device_check.log)")
peak = eager.get("peak", {})
for dtype, name in (("bfloat16", "bf16 GEMM peak"), ("float32", "float32 GEMM peak (no TF32)")):
    found = peak.get(f"{dtype} peak")
    if found:
        check("PASS", f"benchmark: {name}", f"{rate(found['median'])} ({found['engine']})")
    elif dtype == "float32" or on_gpu:
        check("FAIL", f"benchmark: {name}", "not measured")
precision = "float32" if tiny else "bf16, channels last"
steps, ratios = {}, {}
for variant, report in reports.items():
    training = report["results"].get("training", {})
    step = training.get(f"step {size}")
    if step:
        fraction = step.get("fraction_of_peak")
        steps[variant] = fraction
        shown = f", {100 * fraction:.1f} % of the GEMM peak alongside" if fraction else ""
        check("PASS", f"benchmark: model step {size}² batch {batch} ({precision}, {variant})",
              f"{step['median']:.1f} images/s, {rate(step['achieved_gflops'])}{shown}")
    e2e = training.get("e2e")
    if e2e:
        extra = ""
        if "data_wait_s" in e2e:
            extra += f", waits {1000 * e2e['data_wait_s']:.2f} ms per step for data"
        if "gpu_utilisation_percent" in e2e:
            extra += f", GPU busy {e2e['gpu_utilisation_percent']:.0f} %"
        ratio = training.get(f"e2e ÷ step")
        ratios[variant] = ratio["median"] if ratio else None
        data = "CamVid" if not tiny else "synthetic strips"
        check("PASS", f"benchmark: trainer on {data}, crop {size} ({variant})",
              f"{e2e['median']:.1f} images/s"
              + (f" = {ratio['median']:.2f} × the model step" if ratio else "") + extra)
    elif not tiny:
        check("FAIL", f"benchmark: trainer ({variant})",
              "not measured" + ("" if camvid else ": no CamVid images (scripts/device_data.sh)"))
best_step = max((value for value in steps.values() if value is not None), default=None)
shown = ", ".join(f"{key} {100 * value:.1f} %" for key, value in steps.items() if value)
target(f"target: model step ≥ 40 % of the bf16 GEMM peak at {size}² batch {batch}",
       None if best_step is None else best_step >= 0.40, shown)
best_ratio = max((value for value in ratios.values() if value is not None), default=None)
shown = ", ".join(f"{key} {value:.2f}" for key, value in ratios.items() if value)
target("target: trainer ≥ 0.9 × model step", None if best_ratio is None else best_ratio >= 0.9,
       shown)
reference = eager.get("training", {}).get("e2e ÷ reference")
if reference:
    check("PASS", "benchmark: trainer ÷ reference loop", f"{reference['median']:.2f} (eager)")
inference = eager.get("inference", {})
whole = next((value for key, value in inference.items() if key.startswith("whole")), None)
if whole:
    memory = inference["peak memory"]
    check("PASS", "benchmark: inference 500×375",
          f"{whole['median']:.1f} images/s, peak {memory['median']:.0f} {memory['unit']}")
elif reports:
    check("FAIL", "benchmark: inference 500×375", "not measured")

elapsed = time.time() - started
limit = 480
if judged:
    check("PASS" if elapsed <= limit else "FAIL", "device check within 8 minutes",
          f"{elapsed:.0f} s")
else:
    check("PASS", "device check duration", f"{elapsed:.0f} s (tiny CPU mode)" if tiny
          else f"{elapsed:.0f} s")

# benchmark.json and benchmark.md: both runs.
(out / "benchmark.json").write_text(json.dumps(reports, indent=2) + "\n")
tables = ["# Device check benchmark", ""]
for variant in reports:
    tables += [f"## {variant}", "", (work / f"bench_{variant}" / "benchmark.md").read_text()]
(out / "benchmark.md").write_text("\n".join(tables))

environment = next(iter(reports.values()), {}).get("environment", {})
machine = environment.get("machine", {})
versions = environment.get("versions", {})
described = machine.get("gpu") or machine.get("processor") or platform.processor()
header = [
    f"parsenet device check, {time.strftime('%Y-%m-%d %H:%M:%S')}",
    f"machine: {described}; {os.cpu_count()} CPUs; torch {versions.get('torch', '?')}; "
    f"python {platform.python_version()}",
    f"mode: device {device}{', tiny' if tiny else ''}; {elapsed:.0f} s; CamVid: {camvid or 'none'}",
    "files: device_check.log, benchmark.json, benchmark.md, summary.txt",
    "",
]
width = max(len(name) for _, name, _ in checks)
lines = [f"{status:<4}  {name:<{width}}  {figure}" for status, name, figure in checks]
(out / "summary.txt").write_text("\n".join(header + lines) + "\n")
print("\n".join(header + lines))
failed = sum(status == "FAIL" for status, _, _ in checks)
print(f"\n{len(checks)} checks, {failed} failed; summary: {out / 'summary.txt'}")
sys.exit(1 if failed else 0)
PY
exit "${PIPESTATUS[0]}"
