#!/usr/bin/env bash
# Quick start, command 2: set up .venv, then lint, build the docs strictly and run the fast test
# suite (in parallel, one worker per core). Extra arguments go to pytest (e.g.
# `bash scripts/test.sh -m slow`).
# Real-data tests read PARSENET_VOC and PARSENET_CAMVID (defaulting to ../shared/datasets/… when
# that folder exists).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
shared=../shared/datasets
if [ -z "${PARSENET_VOC:-}" ] && [ -d "$shared/voc2012-sample" ]; then
    export PARSENET_VOC="$(cd "$shared/voc2012-sample" && pwd)"
fi
if [ -z "${PARSENET_CAMVID:-}" ] && [ -d "$shared/camvid" ]; then
    export PARSENET_CAMVID="$(cd "$shared/camvid" && pwd)"
fi
.venv/bin/ruff check parsenet tests scripts
.venv/bin/ruff format --check --quiet parsenet tests scripts
# The user guide (docs/) as a site, strictly: any warning fails — a link to a missing page, anchor
# or file (the README's too, through docs/readme.md) or a page left out of the navigation.
.venv/bin/python -m sphinx -W --keep-going -E -q -b html docs build/docs
# One worker per core; each test file stays on one worker (its module fixtures are built once).
exec .venv/bin/python -m pytest -n auto --dist loadfile "$@"
