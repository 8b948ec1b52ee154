#!/usr/bin/env bash
# Install the R package from the working tree and run its testthat suite.
set -euo pipefail
if [ ! -f DESCRIPTION ]; then
  echo "no R package in this tree yet: skipping R tests"
  exit 0
fi
lib="${R_TEST_LIB:-$(pwd)/.Rlib}"
mkdir -p "$lib"
R CMD INSTALL --no-multiarch --library="$lib" . >/dev/null
R_LIBS="$lib" Rscript -e 'res <- testthat::test_dir("tests/testthat", package = "lmmscope", load_package = "installed", reporter = "summary", stop_on_failure = TRUE)'
