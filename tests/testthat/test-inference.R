# The debiased inference is the Python core's table; R shows it and checks it against
# R's own t distribution and p.adjust (independent implementations of the same maths).

test_that("confint and summary show the core's debiased inference", {
  skip_if_no_lmmscope()
  d <- lmm_scope_example()
  fit <- lmm_scope(y ~ . + (z1 + z2 | cluster), data = d)
  tab <- inference(fit)
  df <- attr(tab, "df")
  expect_equal(df, 29)
  expect_equal(dim(tab), c(23L, 7L))
  expect_equal(tab$p_value, 2 * pt(abs(tab$t), df, lower.tail = FALSE), tolerance = 1e-10)
  expect_equal(tab$p_adjusted, p.adjust(tab$p_value, "BH"), tolerance = 1e-12)
  half <- qt(0.975, df) * tab$std_error
  expect_equal(tab$ci_lower, tab$estimate - half, tolerance = 1e-10)
  ci <- confint(fit, method = "debiased")
  expect_equal(colnames(ci), c("2.5 %", "97.5 %"))
  expect_true(ci["x1", 1] < 1 && 1 < ci["x1", 2])
  expect_true(ci["x5", 1] < 0.5 && 0.5 < ci["x5", 2])
  expect_lt(tab["x10", "p_value"], 1e-6)
  # another level: the core's table from the stored estimate and SE, equal to a fit made
  # at that level and to R's own t quantile
  fit90 <- lmm_scope(y ~ . + (z1 + z2 | cluster), data = d, conf.level = 0.9)
  ci90 <- confint(fit, c("x1", "x2"), level = 0.9, method = "debiased")
  expect_equal(ci90, confint(fit90, c("x1", "x2"), level = 0.9, method = "debiased"),
               tolerance = 1e-10)
  expect_equal(unname(ci90[, 2]), tab[c("x1", "x2"), "estimate"] +
                 qt(0.95, df) * tab[c("x1", "x2"), "std_error"], tolerance = 1e-12)
  # adjustments across every column, whatever rows parm returns
  expect_equal(inference(fit, adjust = "holm")$p_adjusted, p.adjust(tab$p_value, "holm"),
               tolerance = 1e-12)
  expect_equal(inference(fit, c("x1", "x7"), adjust = "holm")$p_adjusted,
               p.adjust(tab$p_value, "holm")[match(c("x1", "x7"), rownames(tab))],
               tolerance = 1e-12)
  expect_equal(inference(fit, adjust = "none")$p_adjusted, tab$p_value, tolerance = 1e-12)
  expect_error(inference(fit, adjust = "hommel"), "adjust must be one of")
  expect_output(print(summary(fit)), "Debiased inference")
  no_inf <- lmm_scope(y ~ . + (z1 + z2 | cluster), data = d, inference = FALSE)
  expect_error(confint(no_inf, method = "debiased"), "inference = TRUE")
  expect_error(confint(fit, "nope", method = "debiased"), "unknown coefficient")
})
