test_that("the installed package carries the Python source install_lmmscope() needs", {
  src <- system.file("python", package = "lmmscope")
  expect_true(file.exists(file.path(src, "pyproject.toml")))
  expect_true(file.exists(file.path(src, "python", "lmmscope", "rbridge.py")))
  expect_error(install_lmmscope(source = tempfile()), "no lmmscope Python source")
})

with_virtualenv_env <- function(values, code) {
  names <- c("RETICULATE_VIRTUALENV_ROOT", "WORKON_HOME")
  old <- Sys.getenv(names, unset = NA)
  on.exit(for (v in names) {
    if (is.na(old[[v]])) Sys.unsetenv(v) else do.call(Sys.setenv, as.list(old[v]))
  })
  Sys.unsetenv(names)
  if (length(values)) do.call(Sys.setenv, as.list(values))
  force(code)
}

test_that("the virtualenv root is absolute and honours both variables, as reticulate's", {
  root <- tempfile()
  with_virtualenv_env(c(WORKON_HOME = root), {
    expect_equal(lmmscope:::virtualenv_path("r-x"), file.path(normalizePath(root, mustWork = FALSE), "r-x"))
  })
  with_virtualenv_env(c(RETICULATE_VIRTUALENV_ROOT = root, WORKON_HOME = tempdir()), {
    expect_equal(dirname(lmmscope:::virtualenv_path("r-x")), normalizePath(root, mustWork = FALSE))
  })
  with_virtualenv_env(character(), {
    path <- lmmscope:::virtualenv_path("r-x")
    expect_false(grepl("~", path, fixed = TRUE))
    expect_equal(path, file.path(normalizePath("~/.virtualenvs", mustWork = FALSE), "r-x"))
  })
  expect_equal(lmmscope:::virtualenv_path(file.path(root, "env")), file.path(normalizePath(root, mustWork = FALSE), "env"))
})

test_that("a broken virtualenv is made again; a working one is never removed", {
  python <- Sys.which("python3")
  expect_true(nzchar(python))
  root <- tempfile()
  on.exit(unlink(root, recursive = TRUE))
  with_virtualenv_env(c(WORKON_HOME = root), {
    broken <- file.path(root, "r-test", "bin")
    dir.create(broken, recursive = TRUE)
    writeLines(c("#!/bin/sh", "exit 1"), file.path(broken, "python"))
    Sys.chmod(file.path(broken, "python"), "755")
    path <- lmmscope:::virtualenv_path("r-test")
    expect_message(venv_python <- lmmscope:::usable_virtualenv(path, python), "no working Python")
    expect_equal(lmmscope:::run_clean(venv_python, c("-c", "pass")), 0L)
    expect_true(file.exists(file.path(root, "r-test", "pyvenv.cfg")))
    # a working virtualenv: kept, files and all, whatever happens next
    marker <- file.path(root, "r-test", "user-file")
    writeLines("kept", marker)
    expect_silent(lmmscope:::usable_virtualenv(path, python))
    expect_true(file.exists(marker))
    # a failed install (a source pip cannot build) stops with the path, the virtualenv stays
    bad <- tempfile()
    dir.create(bad)
    writeLines("[project", file.path(bad, "pyproject.toml"))
    expect_error(suppressWarnings(install_lmmscope(path, python = python, source = bad)),
                 paste0("into ", path, " failed"), fixed = TRUE)
    expect_true(file.exists(marker))
    expect_equal(lmmscope:::run_clean(venv_python, c("-c", "pass")), 0L)
  })
})
