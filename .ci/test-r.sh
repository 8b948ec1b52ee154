#!/usr/bin/env bash
# Install the R package from the working tree and run its testthat suite. Exits non-zero
# on any failure or error; with CI set, a missing Python core or lme4 fails the run
# (tests/testthat/helper-python.R) and any skipped test fails it too.
set -euo pipefail
cd "$(dirname "$0")/.."
lib="${R_TEST_LIB:-$(pwd)/.Rlib}"
mkdir -p "$lib"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
R CMD INSTALL --no-multiarch --library="$lib" . >"$log" 2>&1 || { cat "$log"; exit 1; }
R_LIBS="$lib${R_LIBS:+:$R_LIBS}" Rscript -e '
res <- as.data.frame(testthat::test_dir("tests/testthat", package = "lmmscope",
                                        load_package = "installed", reporter = "summary",
                                        stop_on_failure = TRUE))
if (nzchar(Sys.getenv("CI")) && sum(res$skipped) > 0) {
  stop(sum(res$skipped), " test(s) skipped in CI: ", paste(res$test[res$skipped], collapse = "; "))
}'
