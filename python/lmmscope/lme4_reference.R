# lme4's side of every comparison between lmmscope and lme4::lmer, in one file.
#
# Sourced into an environment of its own by the R package's check_against_lmer() and,
# through rpy2, by lmmscope.validate (Python's check_against_lme4, `lmmscope validate`)
# and the Python tests (tests/lme4_helper.py).  It builds lmer's data and formula from a
# fit's own design columns, fits lmer, and returns plain values (numbers, names, data
# frames) with lmmscope's names.  The comparison itself is Python's
# lmmscope.lme4_comparison.compare_values, the one used by all three.

# BOBYQA run to rhoend = 1e-12: lmer's default stops early (Orthodont by ML: 5e-7
# deviance units above the optimum, a correlation off by 1.2e-4), and a comparison is
# about the estimator, not optimiser slack.
lmer_control <- function() {
  lme4::lmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-12, maxfun = 1e5))
}

# Evaluate `expr`, keeping its warnings and messages (lmer's singular-fit note) as text.
quietly <- function(expr) {
  notes <- character()
  keep <- function(restart) function(cond) {
    notes <<- c(notes, trimws(conditionMessage(cond)))
    invokeRestart(restart)
  }
  value <- withCallingHandlers(expr, warning = keep("muffleWarning"), message = keep("muffleMessage"))
  list(value = value, notes = notes)
}

# The columns of `M` (our `names`) as formula terms, added to `state$cols`.  A leading
# all-ones column is lme4's `1` (which lme4 names "(Intercept)"), otherwise `0` drops
# lme4's implicit intercept; a column equal to one already there under the same name
# (a slope that is also a fixed effect) is reused.  `rename` maps lme4's names to ours.
design_terms <- function(M, names, state) {
  M <- as.matrix(M)
  intercept <- ncol(M) > 0 && all(M[, 1] == 1)
  terms <- if (intercept) "1" else "0"
  rename <- if (intercept) c("(Intercept)" = names[1]) else character()
  for (j in setdiff(seq_len(ncol(M)), if (intercept) 1L)) {
    candidate <- make.names(names[j])
    if (candidate %in% names(state$cols) && isTRUE(all(state$cols[[candidate]] == M[, j]))) {
      safe <- candidate
    } else {
      safe <- make.unique(c(state$taken, candidate))[length(state$taken) + 1L]
      state$taken <- c(state$taken, safe)
      state$cols[[safe]] <- as.numeric(M[, j])
    }
    terms <- c(terms, safe)
    rename[safe] <- names[j]
  }
  list(terms = terms, rename = rename, state = state)
}

# lmer's data and formula for a fit's own design: response `y`, fixed-effect columns `X`
# with our names `x_names`, and `terms`, one list(Z, names, group, group_name) per
# random-effects term (its model matrix, our names of its columns, its grouping factor
# on every row, our name of that factor).  Factors thus enter lmer as the fit's own 0/1
# columns, whatever R's contrasts would choose.
lmer_design <- function(y, X, x_names, terms, response = "y") {
  response <- make.names(response)
  state <- list(cols = stats::setNames(list(as.numeric(y)), response), taken = response)
  fixed <- design_terms(X, x_names, state)
  state <- fixed$state
  bars <- character()
  random <- character()
  groups <- character()
  for (term in terms) {
    z <- design_terms(term$Z, term$names, state)
    state <- z$state
    random <- c(random, z$rename[!names(z$rename) %in% names(random)])
    group <- make.names(term$group_name)
    values <- as.character(term$group)
    if (!(group %in% names(state$cols) && identical(as.character(state$cols[[group]]), values))) {
      group <- make.unique(c(state$taken, group))[length(state$taken) + 1L]
      state$taken <- c(state$taken, group)
      state$cols[[group]] <- factor(values)
    }
    groups[group] <- term$group_name
    bars <- c(bars, sprintf("(%s | %s)", paste(z$terms, collapse = " + "), group))
  }
  formula <- sprintf("%s ~ %s", response, paste(c(paste(fixed$terms, collapse = " + "), bars),
                                                collapse = " + "))
  list(data = as.data.frame(state$cols, optional = TRUE), formula = formula,
       rename = list(fixed = fixed$rename, random = random, group = groups))
}

# `x` with the names found in `map` replaced by ours.  lme4 names a second term on one
# grouping factor "g.1": its suffix is dropped when only "g" is in `map`.
relabel <- function(x, map) {
  if (is.null(map) || !length(map)) return(x)
  base <- ifelse(x %in% names(map), x, sub("\\.[0-9]+$", "", x))
  ifelse(base %in% names(map), unname(map[base]), x)
}

# The compared numbers of `m`, any fit with lme4's accessors (an lmer fit, or an
# lmm_scope()/lmm() fit of the R package), with lme4's names mapped to ours by `rename`
# (from lmer_design()).  `singular`: the fit's own verdict (lme4's isSingular for lmer).
lmer_values <- function(m, rename = NULL, singular = lme4::isSingular(m)) {
  b <- lme4::fixef(m)
  vc <- as.data.frame(lme4::VarCorr(m))
  blank <- function(v) ifelse(is.na(v), "", as.character(v))
  var1 <- blank(vc$var1)
  var2 <- blank(vc$var2)
  residual <- vc$grp == "Residual"
  re <- tryCatch(lme4::ranef(m), error = function(e) NULL)
  ranef <- NULL
  if (!is.null(re)) {
    ranef <- do.call(rbind, lapply(names(re), function(g) {
      r <- as.data.frame(re[[g]], optional = TRUE)
      data.frame(grp = rep(relabel(g, rename$group), ncol(r) * nrow(r)),
                 term = rep(relabel(colnames(r), rename$random), each = nrow(r)),
                 level = rep(rownames(r), ncol(r)), value = unlist(r, use.names = FALSE),
                 stringsAsFactors = FALSE)
    }))
  }
  list(method = if (lme4::isREML(m)) "REML" else "ML",
       fixef = data.frame(name = relabel(names(b), rename$fixed), estimate = unname(b),
                          se = unname(sqrt(diag(as.matrix(stats::vcov(m))))),
                          stringsAsFactors = FALSE),
       varcorr = data.frame(grp = ifelse(residual, "Residual", relabel(blank(vc$grp), rename$group)),
                            var1 = ifelse(residual, "", relabel(var1, rename$random)),
                            var2 = ifelse(var2 == "", "", relabel(var2, rename$random)),
                            sdcor = as.numeric(vc$sdcor), stringsAsFactors = FALSE),
       sigma = stats::sigma(m), loglik = as.numeric(stats::logLik(m)),
       aic = stats::AIC(m), bic = stats::BIC(m),
       theta = as.numeric(lme4::getME(m, "theta")), singular = isTRUE(singular),
       fitted = as.numeric(stats::fitted(m)), ranef = ranef)
}

# lmer's fit of `formula` on `data` (REML or ML) and its plain values.  With `theta` (the
# other fit's theta), lme4's own deviance function (REML criterion for REML) is also
# evaluated there; when it is lower than at lmer's optimum, lmer evaluated at `theta`
# (optimizer = NULL) is returned as `at_theta`, so that a difference due to lmer
# stopping short can be told from one due to the other fit.
lmer_reference <- function(formula, data, REML = TRUE, theta = NULL, rename = NULL,
                           control = lmer_control()) {
  f <- stats::as.formula(formula, env = globalenv())
  fit <- quietly(lme4::lmer(f, data = data, REML = REML, control = control))
  m <- fit$value
  devfun <- quietly(lme4::lmer(f, data = data, REML = REML, control = control,
                               devFunOnly = TRUE))$value
  at_lmer <- devfun(lme4::getME(m, "theta"))
  at_theta <- NULL
  at_ours <- NA_real_
  if (length(theta)) {
    at_ours <- devfun(as.numeric(theta))
    if (at_ours < at_lmer) {
      there <- quietly(lme4::lmer(f, data = data, REML = REML, start = list(theta = as.numeric(theta)),
                                  control = lme4::lmerControl(optimizer = NULL)))$value
      at_theta <- lmer_values(there, rename)
    }
  }
  list(values = lmer_values(m, rename), deviance_at_theta = at_ours, deviance_at_lmer = at_lmer,
       at_theta = at_theta, messages = fit$notes, formula = formula, fit = m)
}

# lmer_design() and lmer_reference() in one call: lme4's side of a check of a fit whose
# design is given (see lmer_design()); `theta`: that fit's theta.  Adds lmer's `data` and
# the names of its grouping-factor columns (`groups`).
lmer_check_reference <- function(y, X, x_names, terms, response = "y", REML = TRUE, theta = NULL,
                                 control = lmer_control()) {
  design <- lmer_design(y, X, x_names, terms, response)
  c(lmer_reference(design$formula, design$data, REML, theta, design$rename, control),
    list(data = design$data, groups = names(design$rename$group)))
}
