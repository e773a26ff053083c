#!/usr/bin/env bash
# Check one (Python, torch) combination of the range pyproject.toml declares, in a scratch venv:
# torch is installed first, `pip install -e .` must keep it, then the tests run against it.
#
#   scripts/check_versions.sh PYTHON TORCH [pytest args]
#   scripts/check_versions.sh /root/.pyenv/versions/3.10.13/bin/python torch==2.5.0      # lowest Python, lowest torch
#   scripts/check_versions.sh /root/.pyenv/versions/3.13.0/bin/python torch==2.14.1 tests  # newest Python, full suite
#
# TORCH is anything pip installs (a requirement or a wheel file). The default tests are a quick subset.
# transformers 5 (the dev extra, the tests' reference) disables itself below torch 2.6, so on an older
# torch the reference tests are skipped and everything else runs. Needs network or local wheels for torch.
#
# Passed here (2 CPUs, no GPU; PyPI's CUDA builds import and run on CPU): Python 3.10.13 + torch 2.5.0
# (lowest of both; full suite, also with every other dependency at its lower bound via uv
# --resolution lowest-direct),
# 3.11.7 + torch 2.14.1, 3.13.0 + torch 2.14.1 (full suite); CI: 3.11 + torch 2.13.0+cpu.
set -euo pipefail
[ $# -ge 2 ] || { sed -n 2,16p "$0"; exit 2; }
python=$1 torch_req=$2
shift 2
tests=("$@")
[ ${#tests[@]} -gt 0 ] || tests=(tests/test_generate.py tests/test_caches.py tests/test_reference.py)
cd "$(dirname "$0")/.."
venv=$(mktemp -d /tmp/unmask-check-XXXXXX)
trap 'rm -rf "$venv"' EXIT
"$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --quiet)
"${pip[@]}" --upgrade pip
"${pip[@]}" "$torch_req"
torch_version() { "$venv/bin/python" -c 'import torch; print(torch.__version__)'; }
before=$(torch_version)
"${pip[@]}" -e .
after=$(torch_version)
[ "$before" = "$after" ] || { echo "FAIL: pip install -e . replaced torch $before with $after"; exit 1; }
if "$venv/bin/python" -c 'import sys, torch; sys.exit(torch.__version__ < "2.6")'; then
    "${pip[@]}" -e ".[dev]"
else
    "${pip[@]}" pytest openai httpx datasets
fi
[ "$(torch_version)" = "$before" ] || { echo "FAIL: installing the test tools replaced torch $before"; exit 1; }
echo "python $("$venv/bin/python" -c 'import platform; print(platform.python_version())'), torch $before kept by pip install -e ."
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1} \
    "$venv/bin/python" -m pytest -q -p no:cacheprovider "${tests[@]}"
