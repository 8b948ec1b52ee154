test_that("the seed example through R recovers the true support", {
  skip_if_no_lmmscope()
  sim <- reticulate::import("lmmscope.simulate")
  seed <- sim$seed_frame()
  # through plain lists: reticulate 1.28 converts neither pandas 3 frames nor numpy 2 arrays
  df <- as.data.frame(lapply(seed[[1]]$to_dict(orient = "list"), unlist))
  truth <- unlist(seed[[2]]$tolist())
  expect_s3_class(df, "data.frame")
  fit <- lmm_scope(sim$seed_formula(), data = df)
  expect_setequal(fit$support, c("x1", "x5", "x10"))
  beta <- coef(fit)
  expect_length(beta, 50)
  expect_equal(unname(beta[paste0("x", 0:49)]), truth, tolerance = 0.1 / sqrt(sum(truth^2)))
  expect_lt(sqrt(sum((beta - truth)^2)), 0.1)
})

test_that("lme4 syntax, design syntax and '.' give the same fit", {
  skip_if_no_lmmscope()
  d <- lmm_scope_example()
  xs <- paste0("x", 1:20)
  f_lme4 <- lmm_scope(y ~ . + (z1 + z2 | cluster), data = d)
  f_design <- lmm_scope(as.formula(paste("y ~", paste(c(xs, "z1", "z2"), collapse = " + "),
                                         "| (z1 + z2 | cluster)")), data = d)
  expect_equal(f_lme4$support, f_design$support)
  expect_equal(coef(f_lme4), coef(f_design), tolerance = 1e-8)
  expect_setequal(f_lme4$support, c("x1", "x5", "x10"))
  expect_equal(fixef(f_lme4), lme4::fixef(f_lme4))
  expect_equal(names(coef(f_lme4))[1], "(Intercept)")
})

test_that("a fixed k, a fixed a, always= and a string formula are honoured", {
  skip_if_no_lmmscope()
  d <- lmm_scope_example()
  fit <- lmm_scope("y ~ . + (1 | cluster)", data = d, k = 2, a = 1, always = "x7")
  expect_equal(fit$k, 2L)
  expect_equal(fit$a, 1)
  expect_true("x7" %in% fit$selected)
  expect_setequal(fit$support, c("x1", "x5"))
  expect_equal(sum(coef(fit)[setdiff(names(coef(fit)), c("(Intercept)", "x7"))] != 0), 2)
})

test_that("methods return plain R values that survive saveRDS", {
  skip_if_no_lmmscope()
  d <- lmm_scope_example()
  fit <- lmm_scope(y ~ . + (z1 + z2 | cluster), data = d)
  expect_equal(nobs(fit), 300L)
  expect_equal(length(fitted(fit)), 300L)
  expect_equal(unname(fitted(fit) + residuals(fit)), d$y, tolerance = 1e-10)
  expect_equal(as.numeric(AIC(fit)), -2 * fit$loglik + 2 * attr(logLik(fit), "df"))
  re <- ranef(fit)$cluster
  expect_equal(dim(re), c(30L, 3L))
  expect_equal(rownames(re), levels(d$cluster))
  vc <- as.data.frame(VarCorr(fit))
  expect_equal(vc$sdcor[vc$grp == "Residual"], sigma(fit))
  # population-level prediction is X beta of the refit
  X <- cbind(1, as.matrix(d[, c("x1", "x5", "x10")]))
  expect_equal(unname(predict(fit, newdata = d, re.form = NA)),
               unname(drop(X %*% fixef(fit)[c("(Intercept)", "x1", "x5", "x10")])), tolerance = 1e-10)
  expect_equal(unname(predict(fit, newdata = d)), unname(fitted(fit)), tolerance = 1e-10)
  path <- tempfile(fileext = ".rds")
  saveRDS(fit, path)
  back <- readRDS(path)
  expect_false(any(vapply(unclass(back), function(x) inherits(x, "python.builtin.object"), TRUE)))
  expect_equal(predict(back, newdata = d[1:5, ]), predict(fit, newdata = d[1:5, ]))
  # an unseen cluster is predicted at population level, like allow.new.levels = TRUE
  new <- d[1:2, ]
  new$cluster <- factor(c("new1", "new2"))
  expect_equal(unname(predict(fit, newdata = new)),
               unname(predict(fit, newdata = d[1:2, ], re.form = NA)), tolerance = 1e-12)
  pdf(NULL)
  expect_invisible(plot(fit))
  expect_invisible(plot(fit, type = "coefficients"))
  dev.off()
  expect_output(print(fit), "Selected: x1, x5, x10")
  expect_output(print(summary(fit)), "Std. Error")
})
