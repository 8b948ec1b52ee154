# A fit is plain R data: it predicts after readRDS in an R session with no usable
# Python, holds no Python object, and new data need only the selected model's columns.

contains_python <- function(x) {
  if (inherits(x, "python.builtin.object") || typeof(x) %in% c("externalptr", "raw")) return(TRUE)
  if (is.list(x)) return(any(vapply(x, contains_python, TRUE)))
  FALSE
}

test_that("predict(newdata) needs only the variables of the selected model", {
  skip_if_no_lmmscope()
  d <- lmm_scope_example(p = 30)
  d$site <- factor(rep(c("a", "b", "c"), length.out = nrow(d)))
  fit <- lmm_scope(y ~ . + (1 | cluster), data = d)
  expect_true(all(c("x1", "x5") %in% fit$support))
  needed <- d[1:6, c(fit$support, "cluster")]
  expect_equal(predict(fit, needed), predict(fit, d[1:6, ]))
  expect_equal(predict(fit, needed, re.form = NA), predict(fit, d[1:6, ], re.form = NA))
  expect_equal(all.vars(formula(fit)), c("y", fit$support, "cluster"))
  expect_true(fit$formula_exact)
  # one level of a factor selected: the formula keeps the whole factor, and says so
  d$y2 <- d$y + 3 * (d$site == "b")
  fit2 <- lmm_scope(y2 ~ x1 + site + (1 | cluster), data = d, k = 2)
  expect_setequal(fit2$support, c("x1", "siteb"))
  expect_false(fit2$formula_exact)
  expect_true("site" %in% all.vars(formula(fit2)))
  expect_equal(predict(fit2, d[1:6, c("x1", "site", "cluster")]), predict(fit2, d[1:6, ]))
})

test_that("a saved fit predicts identically in a fresh R session without Python", {
  skip_if_no_lmmscope()
  skip_if_no_lme4()
  d <- lme4::sleepstudy
  d$noise <- stats::rnorm(nrow(d))
  fit <- lmm_scope(Reaction ~ poly(Days, 2) + noise + (Days | Subject), d, k = 1)
  expect_equal(fit$support, "poly(Days, 2)1")
  expect_false(contains_python(unclass(fit)))
  expect_length(grepRaw(paste0("gA", "SV"), serialize(fit, NULL)), 0L)  # base64 of a pickle
  path <- tempfile(fileext = ".rds")
  saveRDS(fit, path)
  expected <- list(predict(fit, d[c(1, 50, 99), ]), predict(fit, d[c(1, 50, 99), ], re.form = NA),
                   fitted(fit), as.matrix(ranef(fit)$Subject),
                   confint(fit, method = "debiased"), confint(fit, method = "Wald"), coef(summary(fit)), as.data.frame(VarCorr(fit)), as.numeric(logLik(fit)))
  expected_path <- tempfile(fileext = ".rds")
  saveRDS(expected, expected_path)
  python <- Filter(file.exists, c("/usr/bin/python3", "/usr/local/bin/python3"))[1]
  if (is.na(python)) python <- "/nonexistent/python3"
  script <- tempfile(fileext = ".R")
  writeLines(c(
    "suppressPackageStartupMessages(library(lmmscope))",
    sprintf("fit <- readRDS('%s'); d <- lme4::sleepstudy", path),
    "stopifnot(!lmmscope_available())",
    "got <- list(predict(fit, d[c(1, 50, 99), ]), predict(fit, d[c(1, 50, 99), ], re.form = NA),",
    "            fitted(fit), as.matrix(ranef(fit)$Subject),",
    "            confint(fit, method = 'debiased'), confint(fit, method = 'Wald'),",
    "            coef(summary(fit)), as.data.frame(VarCorr(fit)), as.numeric(logLik(fit)))",
    "stopifnot(!('noise' %in% all.vars(formula(fit))))",
    "invisible(capture.output(print(fit), summary(fit)))",
    sprintf("cat('identical:', identical(got, readRDS('%s')), '\\n')", expected_path)), script)
  empty <- tempfile()
  dir.create(empty)
  out <- system2(file.path(R.home("bin"), "Rscript"), script, stdout = TRUE, stderr = TRUE,
                 env = c(paste0("RETICULATE_PYTHON=", python), paste0("PYTHONPATH=", empty),
                         "PYTHONNOUSERSITE=1", paste0("R_LIBS=", paste(.libPaths(), collapse = ":"))))
  expect_match(paste(out, collapse = "\n"), "identical: TRUE")
})
