# The Python core: imported lazily so library(lmmscope) never fails without Python.

.core <- new.env(parent = emptyenv())

.onLoad <- function(libname, pkgname) {
  # The virtualenv made by install_lmmscope() is used unless the user chose a Python; it is
  # found by its absolute path, the same one install_lmmscope() wrote to.
  venv_python <- virtualenv_python(virtualenv_path(default_envname()))
  if (!nzchar(Sys.getenv("RETICULATE_PYTHON")) && file.exists(venv_python)) {
    try(reticulate::use_python(venv_python, required = FALSE), silent = TRUE)
  }
  .core$bridge <- reticulate::import("lmmscope.rbridge", delay_load = TRUE)
}

default_envname <- function() "r-lmmscope"

#' Is the Python core of lmmscope available?
#'
#' \code{TRUE} when reticulate finds a Python with the \code{lmmscope} Python
#' package installed. Only fitting needs it: methods of a fitted (or
#' \code{readRDS}'d) model run in R alone.
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
    "lmmscope needs its Python core to fit a model, and reticulate cannot find it",
    if (length(python) && !is.na(python)) paste0(" (Python in use: ", python, ")") else "",
    ".\nFix it in one of these ways:\n",
    "  * lmmscope::install_lmmscope()   ",
    "# makes the virtualenv ", virtualenv_path(default_envname()), " (about 870 MB), then restart R\n",
    "  * or set RETICULATE_PYTHON to a Python where the lmmscope Python package is ",
    "installed, then restart R.\n",
    "Fitted models need no Python: predict(), summary() etc. work without it.")
}

# The bridge module, or one clear error saying how to install it.
core <- function() {
  if (!lmmscope_available()) stop(missing_core_message(), call. = FALSE)
  .core$bridge
}

# Call an entry point of the bridge: a Python exception becomes an R error carrying
# only its message; the core's warnings become R warnings in R's words.
call_core <- function(name, ...) {
  bridge <- core()
  if (!reticulate::py_has_attr(bridge, name)) {
    stop("the lmmscope Python core that reticulate found is older than this R package (no ",
         name, "()): run lmmscope::install_lmmscope() and restart R", call. = FALSE)
  }
  fun <- bridge[[name]]
  out <- tryCatch(fun(...), error = function(e) stop(python_error_message(e), call. = FALSE))
  for (w in out$warnings) warning(paste0("lmmscope: ", w$message), call. = FALSE)
  out
}

python_error_message <- function(e) {
  msg <- conditionMessage(e)
  last <- tryCatch(reticulate::py_last_error(), error = function(err) NULL)
  if (!is.null(last) && !is.null(last$value) && nzchar(last$value)) {
    msg <- last$value
  } else {
    msg <- sub("\n*Run `reticulate::py_last_error\\(\\)` for details.*$", "", msg)
    msg <- sub("^Error in py_call_impl\\(.*?\\) *: *", "", msg)
    msg <- sub("^[A-Za-z]*(Error|Exception): *", "", msg)
  }
  msg <- sub("(?s)\n*(Detailed traceback|Traceback).*$", "", msg, perl = TRUE)
  gsub("^['\"]|['\"]$", "", trimws(msg))
}
