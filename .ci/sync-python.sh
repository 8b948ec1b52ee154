#!/usr/bin/env bash
# Copy the Python core into inst/python so the built R tarball carries it and
# install_lmmscope() works from the tarball alone. Generated, not committed
# (inst/python is in .gitignore): run before R CMD build / R CMD INSTALL.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf inst/python
mkdir -p inst/python/python
cp pyproject.toml README.md LICENSE inst/python/
cp -r python/lmmscope inst/python/python/
find inst/python -name '__pycache__' -type d -prune -exec rm -rf {} +
