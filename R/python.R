# The Python core: imported lazily so library(lmmscope) never fails without Python.

.core <- new.env(parent = emptyenv())

.onLoad <- function(libname, pkgname) {
  # A virtualenv made by install_lmmscope() is used unless the user chose a Python.
  if (!nzchar(Sys.getenv("RETICULATE_PYTHON")) &&
      isTRUE(tryCatch(reticulate::virtualenv_exists(default_envname()),
                      error = function(e) FALSE))) {
    try(reticulate::use_virtualenv(default_envname(), required = FALSE), silent = TRUE)
  }
  .core$bridge <- reticulate::import("lmmscope.rbridge", delay_load = TRUE)
}

default_envname <- function() "r-lmmscope"

#' Is the Python core of lmmscope available?
#'
#' \code{TRUE} when reticulate finds a Python with the \code{lmmscope} Python
#' package installed; used to guard examples and tests.
#'
#' @return A single logical.
#' @export
#' @examples
#' lmmscope_available()
lmmscope_available <- function() {
  isTRUE(tryCatch(reticulate::py_module_available("lmmscope.rbridge"),
                  error = function(e) FALSE))
}

missing_core_message <- function() {
  python <- tryCatch(reticulate::py_config()$python, error = function(e) NA_character_)
  paste0(
    "lmmscope needs its Python core, which reticulate cannot find",
    if (!is.na(python) && length(python)) paste0(" (Python in use: ", python, ")") else "",
    ".\nFix it in one of these ways:\n",
    "  * lmmscope::install_lmmscope(source = \"/path/to/lmmscope\")  ",
    "# the source checkout; makes the virtualenv 'r-lmmscope'\n",
    "  * or set RETICULATE_PYTHON to a Python where `pip install /path/to/lmmscope` ",
    "was run, then restart R.")
}

# The bridge module, or one clear error saying how to install it.
core <- function() {
  if (!lmmscope_available()) stop(missing_core_message(), call. = FALSE)
  .core$bridge
}

# Call the core; a Python exception becomes an R error carrying only its message.
call_core <- function(fun, ...) {
  tryCatch(fun(...), error = function(e) {
    stop(python_error_message(e), call. = FALSE)
  })
}

python_error_message <- function(e) {
  msg <- conditionMessage(e)
  last <- tryCatch(reticulate::py_last_error(), error = function(err) NULL)
  if (!is.null(last) && !is.null(last$value) && nzchar(last$value)) {
    msg <- paste0(last$type, ": ", last$value)
  } else {
    msg <- sub("\n*Run `reticulate::py_last_error\\(\\)` for details.*$", "", msg)
    msg <- sub("^Error in py_call_impl\\(.*?\\) *: *", "", msg)
  }
  msg <- gsub("^(ValueError|KeyError|TypeError): *", "", msg)
  gsub("^['\"]|['\"]$", "", trimws(msg))
}

#' Install the Python core of lmmscope
#'
#' Creates (or reuses) the virtualenv \code{envname} and installs the Python
#' package into it with pip. \code{library(lmmscope)} uses that virtualenv
#' automatically when \env{RETICULATE_PYTHON} is not set.
#'
#' @param source What pip installs: the path to an lmmscope source checkout (the
#'   directory holding \file{pyproject.toml}), or a pip requirement. Defaults to
#'   the environment variable \env{LMMSCOPE_PYTHON_SOURCE}, else \code{"lmmscope"}.
#' @param envname Name of the virtualenv.
#' @param python The Python used to create the virtualenv (\code{NULL}: reticulate's choice).
#' @return The path of the virtualenv's Python, invisibly.
#' @export
#' @examples
#' \dontrun{
#' install_lmmscope(source = "~/src/lmmscope")
#' }
install_lmmscope <- function(source = Sys.getenv("LMMSCOPE_PYTHON_SOURCE", "lmmscope"),
                             envname = default_envname(), python = NULL) {
  if (!reticulate::virtualenv_exists(envname)) {
    reticulate::virtualenv_create(envname, python = python)
  }
  if (dir.exists(source)) source <- normalizePath(source)
  reticulate::virtualenv_install(envname, packages = source, ignore_installed = FALSE)
  message("Installed the lmmscope Python core into virtualenv '", envname,
          "'. Restart R, then library(lmmscope).")
  invisible(reticulate::virtualenv_python(envname))
}
