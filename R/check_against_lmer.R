# Check a fit against lme4::lmer, the reference implementation, in one call.
#
# Uses only lme4's accessor generics on `fit` (getME X/y/flist/cnms/mmList/theta,
# isREML, fixef, VarCorr, sigma, logLik, fitted), so it works for the S3 methods of
# lmm_scope()/lmm() fits and, as its own tests use, for lmer fits themselves.

#' Check a fit against lme4::lmer
#'
#' Refits the model that \code{fit} ended with (for \code{\link{lmm_scope}()}: the selected columns
#' plus the unpenalised ones) with \code{lme4::lmer()} and compares every quantity it
#' reports.  The refit uses the fit's own design columns (\code{getME(fit, "X")}), not the
#' formula, so a factor enters both fits as the same 0/1 columns with the same
#' reference level, whatever contrasts are set.  lmer runs BOBYQA to \code{rhoend = 1e-12}
#' (its default may stop short of the optimum).
#'
#' \code{rel_diff = abs_diff / max(|lme4|, scale)}, with \code{scale} the unit the quantity is
#' estimated on, so that values near 0 are judged against their own precision: a fixed
#' effect's lme4 standard error; lme4's sigma for random-effect SDs, sigma and the
#' conditional predictions; 1 for logLik, the deviance and isSingular (absolute); for a
#' correlation, 1 or sigma / the smaller of its two SDs when that is larger (the
#' correlation is only determined to that precision).  A correlation involving an SD
#' below \code{tol * sigma} in lme4 is not identified (singular fit): status
#' \code{"not_identified"}.
#'
#' When a quantity differs, lme4's own deviance function (\code{lmer(..., devFunOnly =
#' TRUE)}) is evaluated at both optima; if ours is lower, lmer is re-evaluated at our
#' theta (\code{lmerControl(optimizer = NULL)}) and rows that agree with that get status
#' \code{"lme4_optimum_worse"} instead of \code{"FAIL"}.
#'
#' @param fit A fit of \code{\link{lmm_scope}()} or \code{lmm()} (or any fit with lme4's \code{getME()}
#'   accessors, such as an lmer fit).
#' @param tol Largest relative difference accepted.
#' @return A data frame with columns \code{quantity}, \code{lmmscope}, \code{lme4}, \code{abs_diff},
#'   \code{rel_diff}, \code{status} (one row per fixed effect, random-effect SD and
#'   correlation, sigma, logLik, the deviance at our theta, 10 conditional
#'   predictions, isSingular) and attributes \code{passed} (logical), \code{lmer} (the lmer
#'   fit), \code{formula} (the lmer formula, on the columns of attribute \code{data}),
#'   \code{deviance} (lme4's deviance function at our theta and at lme4's),
#'   \code{lme4_optimum_worse} and \code{messages} (lmer's warnings and messages).
#' @examples
#' if (lmmscope_available() && requireNamespace("lme4", quietly = TRUE)) {
#'   fit <- lmm_scope(Reaction ~ Days + (Days | Subject), lme4::sleepstudy, k = 0)
#'   check <- check_against_lmer(fit)
#'   check
#'   attr(check, "passed")
#' }
#' @export
check_against_lmer <- function(fit, tol = 1e-6) {
  .require_lme4()
  if (!is.numeric(tol) || length(tol) != 1L || !(tol > 0)) {
    stop("tol must be one positive number", call. = FALSE)
  }
  design <- .lmer_design(fit)
  reml <- isTRUE(lme4::isREML(fit))
  theta_ours <- as.numeric(lme4::getME(fit, "theta"))
  f <- stats::as.formula(design$formula, env = globalenv())
  d <- design$data
  ref <- .quietly(lme4::lmer(f, data = d, REML = reml, control = .tight_lmer_control()))
  devfun <- lme4::lmer(f, data = d, REML = reml, control = .tight_lmer_control(), devFunOnly = TRUE)
  deviance <- c(at_ours = devfun(theta_ours), at_lmer = devfun(lme4::getME(ref$value, "theta")))
  refit_at_ours <- function() {
    .quietly(lme4::lmer(f, data = d, REML = reml, start = list(theta = theta_ours),
                        control = lme4::lmerControl(optimizer = NULL)))$value
  }
  out <- .compare_with_lmer(.fit_numbers(fit), ref$value, tol, rename = design$rename,
                            deviance = deviance, refit_at_ours = refit_at_ours)
  attr(out, "formula") <- design$formula
  attr(out, "data") <- d
  attr(out, "messages") <- ref$notes
  out
}

.require_lme4 <- function(available = requireNamespace("lme4", quietly = TRUE)) {
  if (!available) {
    stop("check_against_lmer() needs the R package lme4, which is not installed: ",
         "install.packages('lme4') (Debian/Ubuntu: apt install r-cran-lme4)", call. = FALSE)
  }
  invisible(TRUE)
}

.tight_lmer_control <- function() {
  lme4::lmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-12, maxfun = 1e5))
}

# Evaluate `expr`, keeping its warnings and messages (lmer's singular-fit note) as text.
.quietly <- function(expr) {
  notes <- character()
  keep <- function(restart) function(cond) {
    notes <<- c(notes, trimws(conditionMessage(cond)))
    invokeRestart(restart)
  }
  value <- withCallingHandlers(expr, warning = keep("muffleWarning"), message = keep("muffleMessage"))
  list(value = value, notes = notes)
}

# Columns of `M` as formula terms (added to `cols`): a leading all-ones column is lme4's
# `1`, otherwise `0` drops lme4's implicit intercept.  `names` are ours; the returned
# `rename` maps lme4's coefficient names back to them.
.lmer_terms <- function(M, names, cols, taken) {
  intercept <- ncol(M) > 0 && all(M[, 1] == 1)
  terms <- if (intercept) "1" else "0"
  rename <- if (intercept) c("(Intercept)" = names[1]) else character()
  for (j in setdiff(seq_len(ncol(M)), if (intercept) 1L)) {
    candidate <- make.names(names[j])
    if (candidate %in% names(cols) && isTRUE(all(cols[[candidate]] == M[, j]))) {
      safe <- candidate  # a slope that is also a fixed effect: one data column
    } else {
      safe <- make.unique(c(taken, candidate))[length(taken) + 1L]
      taken <- c(taken, safe)
      cols[[safe]] <- as.numeric(M[, j])
    }
    terms <- c(terms, safe)
    rename[safe] <- names[j]
  }
  list(terms = terms, rename = rename, cols = cols, taken = taken)
}

# The fit's own design as a data frame with syntactic names, and the lmer formula.
.lmer_design <- function(fit) {
  X <- as.matrix(lme4::getME(fit, "X"))
  flist <- lme4::getME(fit, "flist")
  mm <- lme4::getME(fit, "mmList")
  cnms <- lme4::getME(fit, "cnms")
  if (length(flist) != 1L || length(mm) != 1L) {
    stop("check_against_lmer() handles one grouping factor; this fit has ", length(mm), call. = FALSE)
  }
  Z <- as.matrix(mm[[1]])
  group <- make.names(names(flist)[1])
  response <- make.unique(c(group, "y"))[2]
  cols <- stats::setNames(list(as.numeric(lme4::getME(fit, "y"))), response)
  fixed <- .lmer_terms(X, colnames(X), cols, c(response, group))
  random <- .lmer_terms(Z, cnms[[1]], fixed$cols, fixed$taken)
  cols <- random$cols
  cols[[group]] <- factor(flist[[1]])
  formula <- sprintf("%s ~ %s + (%s | %s)", response, paste(fixed$terms, collapse = " + "),
                     paste(random$terms, collapse = " + "), group)
  list(data = as.data.frame(cols, optional = TRUE), formula = formula,
       rename = list(fixed = fixed$rename, random = random$rename,
                     group = stats::setNames(names(flist)[1], group)))
}

# lme4's isSingular() from theta: a diagonal element of a relative factor below 1e-4.
.is_singular <- function(theta, cnms, tol = 1e-4) {
  diagonal <- unlist(lapply(cnms, function(cn) {
    q <- length(cn)
    at <- which(lower.tri(diag(q), diag = TRUE), arr.ind = TRUE)  # column-major, as theta
    at[, 1] == at[, 2]
  }))
  any(theta[diagonal] < tol)
}

.varcorr_frame <- function(vc) {
  vc <- as.data.frame(vc)
  blank <- function(v) ifelse(is.na(v), "", as.character(v))
  data.frame(grp = blank(vc$grp), var1 = blank(vc$var1), var2 = blank(vc$var2),
             sdcor = as.numeric(vc$sdcor), stringsAsFactors = FALSE)
}

# The numbers compared, from any fit with lme4's accessors (ours, or lmer's).
.fit_numbers <- function(fit) {
  theta <- as.numeric(lme4::getME(fit, "theta"))
  list(fixef = lme4::fixef(fit), varcorr = .varcorr_frame(lme4::VarCorr(fit)),
       sigma = stats::sigma(fit), loglik = as.numeric(stats::logLik(fit)),
       fitted = as.numeric(stats::fitted(fit)), theta = theta,
       singular = .is_singular(theta, lme4::getME(fit, "cnms")))
}

# lmer's numbers with its names mapped back to ours (`rename` from .lmer_design()).
.lmer_numbers <- function(m, rename = NULL) {
  out <- .fit_numbers(m)
  out$se <- sqrt(diag(as.matrix(stats::vcov(m))))
  out$singular <- lme4::isSingular(m)
  relabel <- function(x, map) ifelse(x %in% names(map), map[x], x)
  if (!is.null(rename)) {
    names(out$fixef) <- names(out$se) <- relabel(names(out$fixef), rename$fixed)
    out$varcorr$grp <- relabel(out$varcorr$grp, rename$group)
    out$varcorr$var1 <- relabel(out$varcorr$var1, rename$random)
    out$varcorr$var2 <- relabel(out$varcorr$var2, rename$random)
  }
  out
}

# One row per random-effect SD and correlation: quantity, ours, theirs, scale, identified.
.variance_quantities <- function(ours, theirs, tol) {
  key <- function(vc) paste(vc$grp, vc$var1, vc$var2, sep = "\r")
  vt <- theirs$varcorr[theirs$varcorr$grp != "Residual", ]
  at <- match(key(vt), key(ours$varcorr))
  if (anyNA(at)) {
    stop("the fit's VarCorr lacks lmer's rows ", paste(key(vt)[is.na(at)], collapse = ", "), call. = FALSE)
  }
  sds <- vt[vt$var2 == "", ]
  sd_of <- function(g, v) sds$sdcor[sds$grp == g & sds$var1 == v]
  rows <- lapply(seq_len(nrow(vt)), function(i) {
    r <- vt[i, ]
    if (r$var2 == "") {
      return(list(sprintf("sd[%s: %s]", r$grp, r$var1), theirs$sigma, TRUE))
    }
    smaller <- min(sd_of(r$grp, r$var1), sd_of(r$grp, r$var2))
    scale <- if (smaller > 0) max(1, theirs$sigma / smaller) else Inf
    list(sprintf("cor[%s: %s, %s]", r$grp, r$var1, r$var2), scale, smaller >= tol * theirs$sigma)
  })
  data.frame(quantity = vapply(rows, `[[`, "", 1), lmmscope = ours$varcorr$sdcor[at],
             lme4 = vt$sdcor, scale = vapply(rows, `[[`, 0, 2),
             identified = vapply(rows, `[[`, TRUE, 3), stringsAsFactors = FALSE)
}

# Every compared quantity of `ours` and `theirs` (lists from .fit_numbers/.lmer_numbers).
.quantities <- function(ours, theirs, tol, deviance_at_ours = NULL) {
  missing <- setdiff(names(ours$fixef), names(theirs$fixef))
  if (length(missing)) stop("lmer has no coefficient ", paste(missing, collapse = ", "), call. = FALSE)
  b <- names(ours$fixef)
  n <- length(theirs$fitted)
  rows <- unique(round(seq(1, n, length.out = min(n, 10))))
  part <- function(quantity, mine, ref, scale, identified = TRUE) {
    data.frame(quantity = quantity, lmmscope = as.numeric(mine), lme4 = as.numeric(ref),
               scale = scale, identified = identified, stringsAsFactors = FALSE)
  }
  s <- theirs$sigma
  rbind(part(sprintf("fixef[%s]", b), ours$fixef, theirs$fixef[b], theirs$se[b]),
        .variance_quantities(ours, theirs, tol),
        part("sigma", ours$sigma, s, s),
        part("logLik", ours$loglik, theirs$loglik, 1),
        if (!is.null(deviance_at_ours)) part("deviance at lmmscope's theta", -2 * ours$loglik, deviance_at_ours, 1),
        part(sprintf("fitted[row %d]", rows), ours$fitted[rows], theirs$fitted[rows], s),
        part("isSingular", as.numeric(ours$singular), as.numeric(theirs$singular), 1))
}

.status_table <- function(q, tol, at_ours = NULL) {
  abs_diff <- abs(q$lmmscope - q$lme4)
  rel <- function(ref) abs(q$lmmscope - ref) / pmax(abs(ref), q$scale)
  rel_diff <- rel(q$lme4)
  ok <- (!is.na(rel_diff) & rel_diff <= tol) | (is.na(q$lmmscope) & is.na(q$lme4))
  status <- ifelse(ok, "ok", "FAIL")
  status[!ok & !q$identified] <- "not_identified"
  if (!is.null(at_ours)) {
    near <- !is.na(rel(at_ours)) & rel(at_ours) <= tol
    status[status == "FAIL" & near] <- "lme4_optimum_worse"
  }
  data.frame(quantity = q$quantity, lmmscope = q$lmmscope, lme4 = q$lme4, abs_diff = abs_diff,
             rel_diff = rel_diff, status = status, stringsAsFactors = FALSE)
}

# The comparison core: `ours` (a list as .fit_numbers() returns) against the lmer fit
# `ref`.  `deviance`: lme4's deviance function at c(at_ours, at_lmer); `refit_at_ours`:
# a function returning lmer evaluated at our theta, called only when lme4's optimum is
# worse and some quantity differs.
.compare_with_lmer <- function(ours, ref, tol = 1e-6, rename = NULL, deviance = NULL,
                               refit_at_ours = NULL) {
  theirs <- .lmer_numbers(ref, rename)
  at_ours <- if (is.null(deviance)) NULL else deviance[["at_ours"]]
  q <- .quantities(ours, theirs, tol, at_ours)
  out <- .status_table(q, tol)
  worse <- any(out$status == "FAIL") && !is.null(deviance) && !is.null(refit_at_ours) &&
    deviance[["at_ours"]] < deviance[["at_lmer"]]
  if (worse) {
    there <- .quantities(ours, .lmer_numbers(refit_at_ours(), rename), tol, at_ours)
    out <- .status_table(q, tol, at_ours = there$lme4)
  }
  structure(out, class = c("lmer_check", "data.frame"), passed = !any(out$status == "FAIL"),
            lmer = ref, tol = tol, deviance = deviance, lme4_optimum_worse = worse,
            singular = c(lmmscope = ours$singular, lme4 = theirs$singular))
}

#' @export
print.lmer_check <- function(x, ...) {
  passed <- attr(x, "passed")
  if (is.null(passed)) return(NextMethod())
  old <- options(width = max(getOption("width"), 150))
  on.exit(options(old))
  method <- if (lme4::isREML(attr(x, "lmer"))) "REML" else "ML"
  cat(sprintf("lmmscope vs lme4::lmer (%s): %s\n", method, if (is.null(attr(x, "formula"))) "(formula not recorded)" else attr(x, "formula")))
  print(as.data.frame(unclass(x))[, names(x)], digits = 8, row.names = FALSE)
  failed <- x$quantity[x$status == "FAIL"]
  tol <- format(attr(x, "tol"))
  cat(if (!passed) sprintf("FAILED at tol = %s: %d quantities differ (%s)\n", tol, length(failed),
                           paste(failed, collapse = ", "))
      else if (isTRUE(attr(x, "lme4_optimum_worse"))) sprintf(
        "PASSED at tol = %s, but lme4's optimum is worse than lmmscope's (rows lme4_optimum_worse)\n", tol)
      else sprintf("PASSED at tol = %s (largest relative difference %.2g)\n", tol,
                   max(x$rel_diff, na.rm = TRUE)))
  dev <- attr(x, "deviance")
  if (!is.null(dev)) {
    cat(sprintf("lme4's deviance function: %.10g at lmmscope's theta, %.10g at lme4's\n",
                dev[["at_ours"]], dev[["at_lmer"]]))
  }
  sing <- attr(x, "singular")
  cat(sprintf("isSingular: lmmscope %s, lme4 %s\n", sing[["lmmscope"]], sing[["lme4"]]))
  invisible(x)
}
