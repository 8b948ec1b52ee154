#!/usr/bin/env bash
# R and the R packages the tests need, from Debian (CRAN is not reachable here).
set -euo pipefail
# lme4's ecosystem that the tests compare against (broom.mixed ... ggplot2), the
# vignette's data (mlmRev) and builders (knitr, rmarkdown, pandoc), and qpdf, which
# R CMD check --as-cran needs once the vignette is built (inst/doc)
pkgs="r-base-core r-cran-lme4 r-cran-nlme r-cran-reticulate r-cran-testthat r-cran-roxygen2
r-cran-broom.mixed r-cran-emmeans r-cran-performance r-cran-lmertest r-cran-ggplot2
r-cran-mlmrev r-cran-knitr r-cran-rmarkdown pandoc qpdf"
missing=""
for p in $pkgs; do
  dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -z "$missing" ]; then
  echo "R packages already installed"
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends $missing
