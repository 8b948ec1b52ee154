# check_against_lmer(): lme4_reference.R's lmer refit and the Python core's comparison
# (tested itself in tests/test_validate.py), wired up on lmer fits (which have every
# accessor the check uses), then on lmm_scope()/lmm() fits.

tight <- function() lme4::lmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-12, maxfun = 1e5))

require_lme4_here <- function() {
  if (!requireNamespace("lme4", quietly = TRUE)) {
    if (nzchar(Sys.getenv("CI"))) stop("CI is set but the R package lme4 is not installed")
    skip("lme4 is not installed")
  }
}

unbalanced_q3 <- function(seed = 7, slope_sd = c(0.8, 0.5), n = 150) {
  set.seed(seed)
  sizes <- sample(2:15, n, replace = TRUE)
  g <- rep(seq_len(n), sizes)
  N <- length(g)
  x1 <- rnorm(N); x2 <- rnorm(N); x3 <- rnorm(N)
  f <- factor(sample(c("lo", "mid", "hi"), N, replace = TRUE))
  b <- cbind(rnorm(n), slope_sd[1] * rnorm(n), slope_sd[2] * rnorm(n))
  y <- 1 + 0.5 * x1 - 0.3 * x2 + 0.2 * x3 + 0.4 * (f == "mid") + b[g, 1] + x1 * b[g, 2] +
    x2 * b[g, 3] + rnorm(N)
  d <- data.frame(y, x1, x2, x3, f, g = factor(g))
  d[sample(N), ]
}

test_that("lmer checked against itself passes, with the formula on the fit's own columns", {
  skip_if_no_lmmscope()
  require_lme4_here()
  m <- lme4::lmer(Reaction ~ Days + (Days | Subject), lme4::sleepstudy, control = tight())
  out <- check_against_lmer(m)
  expect_s3_class(out, "data.frame")
  expect_equal(names(out), c("quantity", "lmmscope", "lme4", "abs_diff", "rel_diff", "status"))
  expect_true(attr(out, "passed"))
  expect_s4_class(attr(out, "lmer"), "merMod")
  expect_equal(attr(out, "formula"), "y ~ 1 + Days + (1 + Days | Subject)")
  expect_lt(max(out$rel_diff), 1e-9)
  expect_true(all(c("fixef[(Intercept)]", "fixef[Days]", "se[Days]", "sd[Subject: (Intercept)]",
                    "sd[Subject: Days]", "cor[Subject: (Intercept), Days]", "sigma", "logLik", "AIC",
                    "deviance at lmmscope's theta", "isSingular") %in% out$quantity))
  expect_equal(sum(startsWith(out$quantity, "fitted[")), 1)  # the worst row
  expect_equal(sum(startsWith(out$quantity, "ranef[Subject: ")), 2)  # the worst level per column
  expect_output(print(out), "PASSED at tol = 1e-06")
})

test_that("factors, unbalanced q = 3 and ML refit from the design columns", {
  skip_if_no_lmmscope()
  require_lme4_here()
  d <- unbalanced_q3()
  m <- lme4::lmer(y ~ x1 + x2 + x3 + f + (x1 + x2 | g), d, REML = FALSE, control = tight())
  out <- check_against_lmer(m)
  expect_true(attr(out, "passed"))
  expect_false(lme4::isREML(attr(out, "lmer")))
  expect_true(all(c("fixef[flo]", "fixef[fmid]") %in% out$quantity))  # R's reference level: hi
  expect_equal(sum(startsWith(out$quantity, "cor[")), 3)
  data("Orthodont", package = "nlme")
  o <- lme4::lmer(distance ~ age + Sex + (age | Subject), Orthodont, control = tight())
  out <- check_against_lmer(o)
  expect_true(attr(out, "passed"))
  expect_true("fixef[SexFemale]" %in% out$quantity)
})

test_that("several random-effects terms (crossed and nested) are each compared", {
  skip_if_no_lmmscope()
  require_lme4_here()
  set.seed(3)
  N <- 600
  d <- data.frame(x = rnorm(N), a = factor(sample(20, N, TRUE)), b = factor(sample(8, N, TRUE)),
                  c = factor(sample(3, N, TRUE)))
  d$y <- 1 + d$x + rnorm(20)[d$a] + rnorm(8)[d$b] + 0.5 * rnorm(8)[d$b] * d$x + rnorm(N)
  m <- lme4::lmer(y ~ x + (1 | a / c) + (x | b), d, control = tight())
  out <- check_against_lmer(m)
  expect_true(attr(out, "passed"))
  expect_true(all(c("sd[c:a: (Intercept)]", "sd[a: (Intercept)]", "sd[b: x]", "cor[b: (Intercept), x]",
                    "ranef[b: x, level 1]") %in% sub("level [0-9]+\\]", "level 1]", out$quantity)))
  expect_equal(sum(startsWith(out$quantity, "ranef[")), 4)
})

test_that("a singular fit passes and is reported as lme4 reports it", {
  skip_if_no_lmmscope()
  require_lme4_here()
  set.seed(1)
  g <- factor(rep(1:40, sample(2:7, 40, replace = TRUE)))
  x <- rnorm(length(g))
  d <- data.frame(y = 2 + x + rnorm(length(g)), x = x, g = g)
  m <- suppressMessages(lme4::lmer(y ~ x + (1 | g), d, control = tight()))
  expect_true(lme4::isSingular(m))
  out <- check_against_lmer(m)
  expect_true(attr(out, "passed"))
  expect_equal(attr(out, "singular"), c(lmmscope = TRUE, lme4 = TRUE))
  expect_true(any(grepl("singular", attr(out, "messages"))))
})

test_that("a missing lme4 is a clear error with the install hint", {
  expect_error(.require_lme4(available = FALSE), "needs the R package lme4.*install.packages\\('lme4'\\)")
  expect_error(check_against_lmer(NULL, tol = -1), "lme4|tol")
})

# ---------------------------------------------------------------------------------------
# On lmm_scope()/lmm() fits.
test_that("check_against_lmer passes on lmm_scope() and lmm() fits", {
  skip_if_no_lmmscope()
  require_lme4_here()
  fit <- lmm_scope(Reaction ~ Days + (Days | Subject), lme4::sleepstudy, k = 0)
  out <- check_against_lmer(fit)
  expect_true(attr(out, "passed"))
  expect_lt(max(out$rel_diff), 1e-6)
  data("Orthodont", package = "nlme")
  fit <- lmm(distance ~ age + Sex + (age | Subject), Orthodont, REML = FALSE)
  out <- check_against_lmer(fit)
  expect_true(attr(out, "passed"))
  expect_false(lme4::isREML(attr(out, "lmer")))
  d <- unbalanced_q3()
  set.seed(2)
  for (j in 1:20) d[[paste0("noise", j)]] <- rnorm(nrow(d))
  fit <- lmm_scope(y ~ . + (x1 + x2 | g), d)
  out <- check_against_lmer(fit)
  expect_true(attr(out, "passed"))
  expect_false(any(grepl("noise", attr(out, "formula"))))
  set.seed(1)
  g <- factor(rep(1:40, sample(2:7, 40, replace = TRUE)))
  x <- rnorm(length(g))
  fit <- lmm(y ~ x + (1 | g), data.frame(y = 2 + x + rnorm(length(g)), x = x, g = g))
  out <- check_against_lmer(fit)
  expect_true(attr(out, "passed"))
  expect_true(all(attr(out, "singular")))
  # a model without a fixed intercept (columns were lost once: R's x[-integer(0)])
  fit <- lmm(Reaction ~ 0 + Days + (1 | Subject), lme4::sleepstudy)
  out <- check_against_lmer(fit)
  expect_true("fixef[Days]" %in% out$quantity)
  expect_true(attr(out, "passed"))
})

test_that("a fit whose coefficient is off fails, naming it", {
  skip_if_no_lmmscope()
  require_lme4_here()
  fit <- lmm(Reaction ~ Days + (Days | Subject), lme4::sleepstudy)
  fit$fixef[["Days"]] <- fit$fixef[["Days"]] * (1 + 1e-4)  # about 7e-4 standard errors
  out <- check_against_lmer(fit)
  expect_false(attr(out, "passed"))
  expect_true("fixef[Days]" %in% out$quantity[out$status == "FAIL"])
  expect_equal(out$status[out$quantity == "fixef[(Intercept)]"], "ok")
  expect_output(print(out), "FAILED at tol = 1e-06: .*fixef\\[Days\\]")
})
