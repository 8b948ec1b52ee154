#' Install the Python core of lmmscope
#'
#' Creates the virtualenv \code{envname} and installs the Python package that
#' ships inside this R package (\file{python/} of the installed package) into
#' it, with its dependencies from PyPI: numpy, scipy, pandas, scikit-learn,
#' formulaic, matplotlib, skscope and JAX. That is about 870 MB on disk (jaxlib
#' alone about 350 MB). pip runs as a separate process of the virtualenv's own
#' Python with a cleaned environment (never inside R's process, where a
#' shared-library Python can lose its ssl module). A virtualenv whose Python
#' does not run, or where the core does not import after installing, is
#' removed and built again once. \code{library(lmmscope)} uses the virtualenv
#' automatically when \env{RETICULATE_PYTHON} is not set.
#'
#' @param envname Name of the virtualenv (under reticulate's virtualenv root).
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
  message("Installing lmmscope's Python core and its dependencies (numpy, scipy, pandas, ",
          "scikit-learn, formulaic, matplotlib, skscope, JAX) into virtualenv '", envname,
          "': about 870 MB, of which jaxlib about 350 MB.")
  for (attempt in 1:2) {
    venv_python <- fresh_virtualenv(envname, python, rebuild = attempt > 1L)
    status <- run_clean(venv_python, c("-m", "pip", "install", "--upgrade", "pip"))
    status <- status + run_clean(venv_python, c("-m", "pip", "install", shQuote(normalizePath(source))))
    if (status == 0L && run_clean(venv_python, c("-c", shQuote("import lmmscope.rbridge"))) == 0L) {
      message("Installed. Restart R, then library(lmmscope).")
      return(invisible(venv_python))
    }
    message("The virtualenv '", envname, "' does not import lmmscope", if (attempt == 1L)
      ": removing it and building it again")
  }
  stop("installing the lmmscope Python core failed (see pip's output above); check that ",
       python, " can reach PyPI (pip needs its ssl module)", call. = FALSE)
}

virtualenv_path <- function(envname) {
  file.path(reticulate::virtualenv_root(), envname)
}

# The virtualenv's Python; the virtualenv is (re)made when asked or when it is broken.
fresh_virtualenv <- function(envname, python, rebuild = FALSE) {
  path <- virtualenv_path(envname)
  venv_python <- file.path(path, if (.Platform$OS.type == "windows") "Scripts/python.exe" else "bin/python")
  broken <- !file.exists(venv_python) || run_clean(venv_python, c("-c", "pass")) != 0L
  if (dir.exists(path) && (rebuild || broken)) unlink(path, recursive = TRUE)
  if (!dir.exists(path)) {
    dir.create(dirname(path), recursive = TRUE, showWarnings = FALSE)
    if (run_clean(python, c("-m", "venv", shQuote(path))) != 0L) {
      stop("could not create a virtualenv with ", python, " -m venv", call. = FALSE)
    }
  }
  venv_python
}

# Run a command in a child process without R's Python-related environment.
run_clean <- function(command, args) {
  if (.Platform$OS.type == "windows") return(system2(command, args))
  unset <- c("PYTHONHOME", "PYTHONPATH", "LD_LIBRARY_PATH", "RETICULATE_PYTHON", "VIRTUAL_ENV")
  system2("env", c(as.vector(rbind("-u", unset)), shQuote(command), args))
}
