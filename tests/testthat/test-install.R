test_that("the installed package carries the Python source install_lmmscope() needs", {
  src <- system.file("python", package = "lmmscope")
  expect_true(file.exists(file.path(src, "pyproject.toml")))
  expect_true(file.exists(file.path(src, "python", "lmmscope", "rbridge.py")))
  expect_error(install_lmmscope(source = tempfile()), "no lmmscope Python source")
})

test_that("a broken virtualenv is detected and made again", {
  python <- Sys.which("python3")
  skip_if(!nzchar(python), "no python3 to make a virtualenv with")
  root <- tempfile()
  withr_env <- Sys.getenv(c("RETICULATE_VIRTUALENV_ROOT", "WORKON_HOME"), unset = NA)
  Sys.setenv(RETICULATE_VIRTUALENV_ROOT = root, WORKON_HOME = root)
  on.exit({
    for (v in names(withr_env)) {
      if (is.na(withr_env[[v]])) Sys.unsetenv(v) else do.call(Sys.setenv, as.list(withr_env[v]))
    }
    unlink(root, recursive = TRUE)
  })
  broken <- file.path(root, "r-test", "bin")
  dir.create(broken, recursive = TRUE)
  writeLines(c("#!/bin/sh", "exit 1"), file.path(broken, "python"))
  Sys.chmod(file.path(broken, "python"), "755")
  expect_equal(normalizePath(reticulate::virtualenv_root()), normalizePath(root))
  venv_python <- lmmscope:::fresh_virtualenv("r-test", python)
  expect_equal(lmmscope:::run_clean(venv_python, c("-c", "pass")), 0L)
  expect_true(file.exists(file.path(root, "r-test", "pyvenv.cfg")))
})

test_that("the core's warnings get R-side wording", {
  w <- list(category = "ConvergenceWarning",
            message = "Objective did not converge. You might want to increase the number of iterations")
  expect_match(lmmscope:::r_warning_text(w), "node-wise lasso")
  expect_false(grepl("increase the number of iterations", lmmscope:::r_warning_text(w)))
  expect_equal(lmmscope:::r_warning_text(list(category = "UserWarning", message = "x")),
               "lmmscope: x")
})
