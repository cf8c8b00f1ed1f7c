#!/usr/bin/env bash
# Install the pinned vega/vega-lite/vega-embed builds (plots/package-lock.json)
# and build plots/offline.html, the offline `dvc plots` template.
# Idempotent: safe to re-run. Needs node/npm; PYTHON defaults to python3.
set -euo pipefail
cd "$(dirname "$0")/.."
npm ci --prefix plots --no-audit --no-fund --loglevel=error
"${PYTHON:-python3}" plots/build_template.py
