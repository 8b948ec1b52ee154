test_that("without the Python core the first fit says how to install it", {
  expect_match(lmmscope:::missing_core_message(), "install_lmmscope")
  expect_match(lmmscope:::missing_core_message(), "RETICULATE_PYTHON")
  python <- Filter(file.exists, c("/usr/bin/python3", "/usr/local/bin/python3"))[1]
  if (is.na(python)) python <- "/nonexistent/python3"
  script <- tempfile(fileext = ".R")
  writeLines(c(
    "library(lmmscope)",
    "cat('available:', lmmscope_available(), '\\n')",
    "r <- tryCatch(lmm_scope(y ~ x1 + (1 | cluster), lmm_scope_example()),",
    "              error = function(e) conditionMessage(e))",
    "cat(r, '\\n')"), script)
  empty <- tempfile()
  dir.create(empty)
  out <- system2(file.path(R.home("bin"), "Rscript"), script, stdout = TRUE, stderr = TRUE,
                 env = c(paste0("RETICULATE_PYTHON=", python), paste0("PYTHONPATH=", empty),
                         "PYTHONNOUSERSITE=1", paste0("R_LIBS=", paste(.libPaths(), collapse = ":"))))
  out <- paste(out, collapse = "\n")
  expect_match(out, "available: FALSE")
  expect_match(out, "lmmscope needs its Python core")
  expect_false(grepl("Traceback", out))
})
