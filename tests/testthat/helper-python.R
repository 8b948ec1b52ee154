# Tests that need the Python core skip, with the reason, only when it is truly absent.
skip_if_no_lmmscope <- function() {
  if (!lmmscope_available()) {
    skip(paste("the lmmscope Python core is not available to reticulate;",
               "set RETICULATE_PYTHON or run lmmscope::install_lmmscope()"))
  }
}
