#' Install the Python core of lmmscope
#'
#' Installs the Python package that ships inside this R package (\file{python/}
#' of the installed package) into the virtualenv \code{envname}, with its
#' dependencies from PyPI: numpy, scipy, pandas, scikit-learn, formulaic,
#' matplotlib, skscope and JAX. That is about 870 MB on disk (jaxlib alone about
#' 350 MB).
#'
#' The virtualenv lives under the first of \env{RETICULATE_VIRTUALENV_ROOT},
#' \env{WORKON_HOME} and \file{~/.virtualenvs} that is set, as an absolute path
#' (\code{envname} may also be a path). A virtualenv whose Python runs is
#' updated in place and never removed, so a failed install (no network, say)
#' leaves a working one as it was; only one whose Python does not run is made
#' again. Running it twice gives the same result. pip runs as a separate process
#' of the virtualenv's own Python with a cleaned environment (never inside R's
#' process, where a shared-library Python can lose its ssl module), on a copy of
#' the source in a temporary folder (the installed R package may be read-only).
#' \code{library(lmmscope)} uses this virtualenv when \env{RETICULATE_PYTHON} is
#' not set.
#'
#' @param envname Name of the virtualenv (under the root above), or its path.
#' @param python The Python that creates the virtualenv (default: \code{python3}
#'   on the PATH).
#' @param source What pip installs: by default the Python source shipped with
#'   this package; or the path of an lmmscope source checkout.
#' @return The path of the virtualenv's Python, invisibly.
#' @export
#' @examples
#' \dontrun{
#' install_lmmscope()
#' }
install_lmmscope <- function(envname = default_envname(), python = NULL,
                             source = system.file("python", package = "lmmscope")) {
  if (!nzchar(source) || !file.exists(file.path(source, "pyproject.toml"))) {
    stop("no lmmscope Python source at '", source, "': give source = the directory holding ",
         "pyproject.toml", call. = FALSE)
  }
  python <- python %||% Sys.which("python3")
  if (!nzchar(python)) stop("no python3 found: give install_lmmscope(python = ...)", call. = FALSE)
  path <- virtualenv_path(envname)
  message("Installing lmmscope's Python core and its dependencies (numpy, scipy, pandas, ",
          "scikit-learn, formulaic, matplotlib, skscope, JAX) into the virtualenv ", path,
          " (about 870 MB, of which jaxlib about 350 MB).")
  venv_python <- usable_virtualenv(path, python)
  copy <- copy_source(source)
  on.exit(unlink(copy, recursive = TRUE), add = TRUE)
  status <- run_clean(venv_python, c("-m", "pip", "install", "--upgrade", "pip"))
  status <- status + run_clean(venv_python, c("-m", "pip", "install", "--upgrade", shQuote(copy)))
  if (status != 0L || run_clean(venv_python, c("-c", shQuote("import lmmscope.rbridge"))) != 0L) {
    stop("installing the lmmscope Python core into ", path, " failed (see pip's output above); ",
         "check that ", python, " can reach PyPI (pip needs its ssl module)", call. = FALSE)
  }
  message(sprintf("Installed lmmscope into %s (%.0f MB). Restart R, then library(lmmscope).",
                  path, directory_megabytes(path)))
  invisible(venv_python)
}

# The root reticulate uses for virtualenvs, expanded: reticulate 1.28 returns "~/.virtualenvs"
# unexpanded and ignores RETICULATE_VIRTUALENV_ROOT, which later versions honour first.
virtualenv_root <- function() {
  root <- Sys.getenv("RETICULATE_VIRTUALENV_ROOT")
  if (!nzchar(root)) root <- Sys.getenv("WORKON_HOME")
  if (!nzchar(root)) root <- "~/.virtualenvs"
  normalizePath(path.expand(root), mustWork = FALSE)
}

virtualenv_path <- function(envname) {
  if (grepl("[/\\\\]", envname)) return(normalizePath(path.expand(envname), mustWork = FALSE))
  file.path(virtualenv_root(), envname)
}

virtualenv_python <- function(path) {
  file.path(path, if (.Platform$OS.type == "windows") "Scripts/python.exe" else "bin/python")
}

# The virtualenv's Python: a virtualenv whose Python runs is kept as it is; one that is
# missing is made; one whose Python does not run (a moved or deleted base Python) is made
# again, as nothing in it can be used.
usable_virtualenv <- function(path, python) {
  venv_python <- virtualenv_python(path)
  if (file.exists(venv_python) && run_clean(venv_python, c("-c", "pass")) == 0L) return(venv_python)
  if (dir.exists(path)) {
    message("The virtualenv ", path, " has no working Python: making it again")
    unlink(path, recursive = TRUE)
  }
  dir.create(dirname(path), recursive = TRUE, showWarnings = FALSE)
  if (run_clean(python, c("-m", "venv", shQuote(path))) != 0L) {
    stop("could not create a virtualenv at ", path, " with ", python, " -m venv", call. = FALSE)
  }
  venv_python
}

# A copy of the Python source in a temporary folder: pip's build writes beside the source.
copy_source <- function(source) {
  copy <- tempfile("lmmscope-python-")
  dir.create(copy)
  file.copy(list.files(source, full.names = TRUE, all.files = TRUE, no.. = TRUE), copy,
            recursive = TRUE)
  copy
}

directory_megabytes <- function(path) {
  files <- list.files(path, recursive = TRUE, all.files = TRUE, full.names = TRUE)
  sum(file.info(files)$size, na.rm = TRUE) / 2^20
}

# Run a command in a child process without R's Python-related environment.
run_clean <- function(command, args) {
  if (.Platform$OS.type == "windows") return(system2(command, args))
  unset <- c("PYTHONHOME", "PYTHONPATH", "LD_LIBRARY_PATH", "RETICULATE_PYTHON", "VIRTUAL_ENV")
  system2("env", c(as.vector(rbind("-u", unset)), shQuote(command), args))
}
