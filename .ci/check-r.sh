#!/usr/bin/env bash
# R CMD build + R CMD check --no-manual on the tarball; fails on any ERROR or WARNING.
# (The testthat suite runs separately in test-r.sh, so the check skips it.)
set -euo pipefail
root="$(pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
R CMD build --no-build-vignettes "$root" >build.log 2>&1 || { cat build.log; exit 1; }
tarball="$(ls lmmscope_*.tar.gz)"
_R_CHECK_FORCE_SUGGESTS_=false R CMD check --no-manual --no-tests "$tarball" >check.log 2>&1 || true
tail -n 25 check.log
if grep -qE "^Status: .*(ERROR|WARNING)" check.log || ! grep -q "^Status:" check.log; then
  echo "R CMD check found problems:" >&2
  cat lmmscope.Rcheck/00check.log >&2
  exit 1
fi
