#!/usr/bin/env bash
# R CMD build + R CMD check --as-cran on the tarball (which carries the Python source in
# inst/python). Fails on any ERROR or WARNING, and on any NOTE except the one an offline
# machine cannot avoid ("unable to verify current time"). The testthat suite runs in
# test-r.sh, so the check skips tests; examples and the vignette (about 10 s) run when
# the Python core is available.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
R CMD build "$root" >build.log 2>&1 || { cat build.log; exit 1; }
tarball="$(ls lmmscope_*.tar.gz)"
tar -tzf "$tarball" >contents.txt
grep -q "lmmscope/inst/python/pyproject.toml" contents.txt || {
  echo "the tarball does not carry the Python source (inst/python)" >&2; exit 1; }
grep -q "lmmscope/inst/doc/lmmscope-for-lme4-users.html" contents.txt || {
  echo "the tarball does not carry the built vignette (inst/doc)" >&2; exit 1; }
# offline: no CRAN incoming checks that need the network
_R_CHECK_CRAN_INCOMING_REMOTE_=false _R_CHECK_CRAN_INCOMING_=false _R_CHECK_FORCE_SUGGESTS_=false \
  R CMD check --as-cran --no-manual --no-tests "$tarball" >check.log 2>&1 || true
tail -n 25 check.log
log=lmmscope.Rcheck/00check.log
if ! grep -q "^Status:" check.log || grep -qE "^Status: .*(ERROR|WARNING)" check.log; then
  echo "R CMD check found problems:" >&2
  cat "$log" >&2
  exit 1
fi
notes="$(grep -E "\.\.\. NOTE$" "$log" | grep -v "checking for future file timestamps" || true)"
if [ -n "$notes" ]; then
  echo "R CMD check NOTEs other than the offline time check:" >&2
  echo "$notes" >&2
  cat "$log" >&2
  exit 1
fi
