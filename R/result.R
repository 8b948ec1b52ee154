# The R object: plain R values from the core's schema plus R's own design state.

SCHEMA_VERSIONS <- 1L

num <- function(x) as.numeric(unlist(x))
chr <- function(x) as.character(unlist(x))

row_matrix <- function(rows, ncol, dimnames = NULL) {
  m <- if (length(rows)) matrix(num(rows), ncol = ncol, byrow = TRUE) else matrix(0, 0L, ncol)
  if (!is.null(dimnames)) dimnames(m) <- dimnames
  m
}

columns_frame <- function(cols) {
  if (is.null(cols) || !length(cols)) return(NULL)
  fill <- function(col) unlist(lapply(col, function(v) if (is.null(v)) NA else v))
  as.data.frame(lapply(cols, fill), stringsAsFactors = FALSE)
}

new_fit <- function(out, design, mcall, kind, k_given = FALSE) {
  if (!(as.integer(out$schema_version) %in% SCHEMA_VERSIONS)) {
    stop("the Python core speaks result schema ", out$schema_version, "; this R package reads ",
         paste(SCHEMA_VERSIONS, collapse = ", "), ": update both to the same release", call. = FALSE)
  }
  fixef_names <- chr(out$fixef_names)
  columns <- match(fixef_names, colnames(design$X))
  fixef <- stats::setNames(num(out$fixef), fixef_names)
  fit <- list(
    call = mcall, kind = kind, formula = design$parts$formula, fixed_formula = design$fixed,
    terms = design$terms, terms_predict = prediction_terms(design, columns),
    contrasts = design$contrasts, xlevels = design$xlevels,
    formula_exact = FALSE,
    has_offset = design$has_offset, offset_arg = mcall$offset,
    assign = attr(design$X, "assign")[columns],
    names = colnames(design$X),
    coefficients = stats::setNames(num(out$coef), chr(out$names)),
    support = chr(out$support), selected = fixef_names, unpenalised = chr(out$unpenalised),
    k = if (is.null(out$k)) NA_integer_ else as.integer(out$k),
    a = if (is.null(out$a)) NA_real_ else as.numeric(out$a),
    criterion = if (is.null(out$criterion)) NA_character_ else as.character(out$criterion),
    k_given = k_given,
    path = columns_frame(out$path),
    coef_path = if (!is.null(out$coef_path)) {
      row_matrix(out$coef_path$coef, length(chr(out$names)),
                 list(as.character(num(out$coef_path$k)), chr(out$names)))
    },
    a_history = columns_frame(out$a_history),
    fixef = fixef,
    vcov = row_matrix(out$vcov, length(fixef), list(fixef_names, fixef_names)),
    sigma = as.numeric(out$sigma), theta = num(out$theta),
    REML = identical(out$method, "REML"), loglik = as.numeric(out$loglik),
    deviance = c(REML = as.numeric(out$deviance_reml_at_estimates),
                 ML = as.numeric(out$deviance_ml_at_estimates)),
    n_params = as.integer(out$n_params),
    ml_refit = list(loglik = as.numeric(out$ml_refit$loglik),
                    n_params = as.integer(out$ml_refit$n_params)),
    nobs = as.integer(out$nobs),
    singular = isTRUE(out$singular), converged = !isFALSE(out$converged),
    y = design$y,
    na.action = design$na.action, n_dropped = length(design$na.action),
    inference = inference_frame(out$inference)
  )
  fit <- c(fit, if (isTRUE(design$several)) several_terms_fields(out, design) else
    one_term_fields(out, design))
  fit$formula_exact <- isTRUE(attr(fit$terms_predict, "exact"))
  fit$fixed_labels <- selected_model_labels(design, columns, fit$terms_predict, fit$formula_exact)
  fit$always <- intersect(design$always, fit$unpenalised)
  fit$data <- model_data(design, fit)
  check_refit_arrays(fit, design, columns)
  class(fit) <- if (kind == "lmm") c("lmm", "lmm_scope") else "lmm_scope"
  fit
}

# One random-effects term (the dense per-cluster path): its fields as they always were.
one_term_fields <- function(out, design) {
  random_names <- colnames(design$Z)
  q <- length(random_names)
  group_levels <- levels(design$group)
  if (length(chr(out$group_labels)) != length(group_levels)) {
    stop("internal error: the core saw ", length(chr(out$group_labels)), " clusters, R ",
         length(group_levels), call. = FALSE)
  }
  list(re = list(random = design$parts$random, group = design$parts$group,
                 group_name = design$parts$group_name, names = random_names,
                 terms = stats::delete.response(design$terms_random),
                 xlevels = design$xlevels_random, levels = group_levels),
       psi = row_matrix(out$psi, q, list(random_names, random_names)),
       ranef = row_matrix(out$ranef, q, list(group_levels, random_names)),
       condvar = aperm(array(num(out$ranef_condvar), c(q, q, length(group_levels))), c(2, 1, 3)),
       ngroups = as.integer(out$ngroups))
}

# Several terms: one entry per term in lme4's order (the core's, by decreasing number of
# levels), each with what predict() and ranef() need; theta and its bounds in that order.
several_terms_fields <- function(out, design) {
  re_terms <- lapply(out$terms, function(ot) {
    given <- design$re_terms[[as.integer(ot$source) + 1L]]
    cnms <- chr(ot$cnms)
    levels <- chr(ot$levels)
    p <- length(cnms)
    if (!identical(levels, levels(given$factor)) || !identical(cnms, colnames(given$Z))) {
      stop("internal error: the core's term ", ot$group_name, " is not the one R sent",
           call. = FALSE)
    }
    list(random = given$random, group = given$group, group_name = given$group_name,
         names = cnms, terms = given$terms, xlevels = given$xlevels, levels = levels,
         ranef = row_matrix(ot$ranef, p, list(levels, cnms)),
         condvar = aperm(array(num(ot$condvar), c(p, p, length(levels))), c(2, 1, 3)),
         cov = row_matrix(ot$cov, p, list(cnms, cnms)), theta = num(ot$theta))
  })
  factors <- unique(vapply(re_terms, `[[`, "", "group_name"))
  list(re_terms = re_terms, lower = num(out$lower),
       ngroups = vapply(factors, function(f) {
         length(re_terms[[match(f, vapply(re_terms, `[[`, "", "group_name"))]]$levels)
       }, 1L))
}

# The random-effects terms of a fit in lme4's order, whichever path fitted it.
re_terms <- function(fit) {
  if (!is.null(fit$re_terms)) return(fit$re_terms)
  re <- fit$re
  list(list(random = re$random, group = re$group, group_name = re$group_name, names = re$names,
            terms = re$terms, xlevels = re$xlevels, levels = re$levels, ranef = fit$ranef,
            condvar = fit$condvar, cov = fit$psi, theta = fit$theta))
}

# The core's inference table as a data.frame; the core computed every column.
inference_frame <- function(tab) {
  if (is.null(tab)) return(NULL)
  out <- data.frame(estimate = num(tab$estimate), std_error = num(tab$std_error),
                    t = num(tab$t), p_value = num(tab$p_value), ci_lower = num(tab$ci_lower),
                    ci_upper = num(tab$ci_upper), p_adjusted = num(tab$p_adjusted),
                    row.names = chr(tab$term))
  attr(out, "df") <- as.numeric(tab$df)
  attr(out, "level") <- as.numeric(tab$level)
  attr(out, "adjust") <- as.character(tab$adjust)
  out
}

# The data the selected model needs, and only that (as_lmerMod(), model.frame()): the
# raw variables of the response, the selected terms, the random-effects term, the
# grouping factor and the offsets, on the rows used in fitting (after subset and
# na.action). Not the candidates' columns: a fit stays about as large as lmer's.
model_data <- function(design, fit) {
  env <- environment(design$fixed)
  vars <- unique(c(all.vars(design$fixed[[2L]]), all.vars(stats::reformulate(
    c(fit$fixed_labels, "1"))), all.vars(fit$terms_predict),
    unlist(lapply(re_terms(fit), function(t) c(all.vars(t$random), all.vars(t$group))))))
  rows <- match(rownames(design$frame), rownames(design$data))
  out <- list()
  for (v in vars) {
    value <- if (v %in% names(design$data)) design$data[[v]] else
      tryCatch(get(v, envir = env), error = function(e) NULL)
    if (v %in% names(design$data) || NROW(value) == nrow(design$data)) {
      out[[v]] <- if (is.null(dim(value))) value[rows] else value[rows, , drop = FALSE]
    }  # anything else (a constant in the formula's environment) stays there
  }
  if (!is.null(design$frame[["(offset)"]])) out[[OFFSET_COLUMN]] <- design$frame[["(offset)"]]
  # a data.frame built directly, so that a matrix column (poly's input, say) stays one
  # column; R stores the automatic row names 1..N as two integers, any other as N strings
  names <- rownames(design$frame)
  n <- length(names)
  structure(out, class = "data.frame", row.names = if (identical(names, as.character(seq_len(n))))
    .set_row_names(n) else names)
}

# The refit's arrays rebuilt from the stored variables (a fit does not store them: the
# same model.matrix() calls on the same rows, milliseconds): the fixed design X of the
# selected columns, the random design Z, each row's cluster, the offset, the fitted
# values (conditional on the random effects) and the residuals.
refit_arrays <- function(object) {
  data <- object$data
  X <- fixed_matrix(object$terms_predict, data, object$contrasts, object$xlevels)
  offset <- attr(X, "offset") + (data[[OFFSET_COLUMN]] %||% 0)
  X <- X[, names(object$fixef), drop = FALSE]
  attr(X, "assign") <- object$assign
  attr(X, "contrasts") <- object$contrasts
  re <- re_terms(object)
  env <- environment(object$formula)
  random <- lapply(re, function(t) {
    Z <- random_matrix(t, data)
    codes <- if (is.null(object$re_terms)) match(as.character(eval(t$group, data, env)), t$levels)
      else match(as.character(grouping_factor(t$group, data, env)), t$levels)
    list(Z = Z, codes = codes, value = rowSums(Z * t$ranef[codes, , drop = FALSE]))
  })
  fitted <- drop(X %*% object$fixef) + offset + Reduce(`+`, lapply(random, `[[`, "value"))
  names(fitted) <- rownames(data)
  list(X = X, Z = random[[1L]]$Z, codes = random[[1L]]$codes, random = random, offset = offset,
       fitted = fitted, residuals = stats::setNames(object$y - fitted, rownames(data)))
}

# The rebuilt arrays must be the ones the core fitted (a mismatch would be a silent
# wrong answer in every method that uses them).
check_refit_arrays <- function(fit, design, columns) {
  arrays <- refit_arrays(fit)
  same <- function(a, b) isTRUE(all.equal(unname(as.matrix(a)), unname(as.matrix(b)),
                                          tolerance = 1e-10, check.attributes = FALSE))
  given <- design$re_terms[match(vapply(re_terms(fit), `[[`, "", "group_name"),
                                 vapply(design$re_terms, `[[`, "", "group_name"))]
  if (isTRUE(design$several)) {  # terms on one factor: match by factor and columns
    key <- function(t) paste(t$group_name, paste(colnames(t$Z) %||% t$names, collapse = "+"))
    given <- design$re_terms[match(vapply(re_terms(fit), key, ""),
                                   vapply(design$re_terms, key, ""))]
  }
  same_terms <- all(mapply(function(a, g) same(a$Z, g$Z) && identical(a$codes, as.integer(g$factor)),
                           arrays$random, given))
  if (!same(arrays$X, design$X[, columns, drop = FALSE]) || !same_terms ||
      !same(arrays$offset, design$offset)) {
    stop("internal error: the fit's design cannot be rebuilt from its stored variables",
         call. = FALSE)
  }
}

OFFSET_COLUMN <- ".lmmscope_offset"
