#!/usr/bin/env bash
# Quick start, command 1: set up .venv, then train and evaluate ParseNet and the FCN baseline on
# the built-in synthetic data and compare them (a few minutes on a laptop CPU).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
exec .venv/bin/python scripts/demo.py "$@"
