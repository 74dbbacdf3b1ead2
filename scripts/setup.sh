#!/usr/bin/env bash
# Create .venv (if missing) and install genrec with its CPU dependencies and test tools.
# CPU machines: torch is pinned by constraints-cpu.txt so pip never pulls CUDA builds.
# GPU machines: GENREC_TORCH="torch" GENREC_EXTRAS="gpu,dev" bash scripts/setup.sh installs the
# registry's CUDA build of torch and faiss-gpu instead.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH=${GENREC_TORCH:-torch==2.13.0}
EXTRAS=${GENREC_EXTRAS:-cpu,dev}
if [ "$TORCH" = "torch==2.13.0" ]; then CONSTRAINTS=(-c constraints-cpu.txt); else CONSTRAINTS=(); fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q "$TORCH"
.venv/bin/python -m pip install -q -e ".[$EXTRAS]" "${CONSTRAINTS[@]}"
echo "genrec installed in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
