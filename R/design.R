# The model's design built with R's own machinery, as lme4's lFormula() does: one model
# frame over every variable (subset, na.action, offset, unused levels dropped), the fixed
# design by model.matrix() with the user's contrasts, the random-effects design by
# model.matrix() of the bar's left side, the grouping factor evaluated in the frame.

# Evaluate model.frame() like the caller's call would (subset/offset are expressions).
frame_call <- function(mcall, formula, env) {
  mf <- mcall[c(1L, match(c("data", "subset", "na.action", "offset"), names(mcall), 0L))]
  mf[[1L]] <- quote(stats::model.frame)
  mf$formula <- formula
  mf$drop.unused.levels <- TRUE
  eval(mf, env)
}

# Terms of `formula` with the prediction variables (poly's coefficients, scale's centre)
# of a model frame built from the same data: what predict() needs for new rows.
terms_with_predvars <- function(mcall, formula, env) {
  fr <- frame_call(mcall, formula, env)
  stats::terms(fr)
}

build_design <- function(formula, mcall, env, contrasts = NULL) {
  if (!is.null(mcall$weights)) {
    stop("weights are not supported: lmmscope fits unweighted linear mixed models", call. = FALSE)
  }
  data <- eval(mcall$data, env)
  if (!is.data.frame(data)) {
    stop("data must be a data.frame, got ", class(data)[1L], call. = FALSE)
  }
  if (is.character(formula) && length(formula) == 1L) {
    formula <- tryCatch(stats::as.formula(formula, env = env), error = function(e) {
      stop("cannot parse the formula: ", conditionMessage(e), call. = FALSE)
    })
  }
  parts <- parse_mixed_formula(formula)
  groups <- lapply(parts$terms, `[[`, "group")
  fixed <- expand_dot(parts$fixed, data, groups)
  environment(fixed) <- environment(parts$formula) %||% env
  all_form <- fixed
  for (term in parts$terms) {
    all_form[[3L]] <- call("+", all_form[[3L]], sub_bars(call("|", term$random, term$group)))
  }
  fr <- tryCatch(frame_call(mcall, all_form, env), error = function(e) {
    stop(frame_error(e), call. = FALSE)
  })
  response <- check_response(fr, fixed)
  tt <- terms_with_predvars(mcall, fixed, env)
  X <- stats::model.matrix(tt, fr, contrasts.arg = contrasts)
  offset <- stats::model.offset(fr)
  design <- list(parts = parts, fixed = fixed, frame = fr, data = data, terms = tt, X = X,
                 y = response, offset = if (is.null(offset)) rep(0, nrow(fr)) else as.numeric(offset),
                 has_offset = !is.null(offset), contrasts = attr(X, "contrasts"),
                 xlevels = stats::.getXlevels(tt, fr), na.action = attr(fr, "na.action"),
                 several = parts$several)
  # each term's model matrix by model.matrix() of its left side, its grouping factor
  # evaluated in the frame (lme4's mkReTrms, term by term)
  design$re_terms <- lapply(parts$terms, function(term) {
    random_form <- stats::as.formula(call("~", term$random), env = environment(fixed))
    tt_random <- terms_with_predvars(mcall, random_form, env)
    group <- if (parts$several) grouping_factor(term$group, fr, environment(fixed)) else
      factor(eval(term$group, fr, environment(fixed)))
    if (anyNA(group)) stop("the grouping factor '", term$group_name, "' has missing values",
                           call. = FALSE)
    list(random = term$random, group = term$group, group_name = term$group_name,
         terms = stats::delete.response(tt_random),
         xlevels = stats::.getXlevels(tt_random, fr), Z = stats::model.matrix(tt_random, fr),
         factor = group)
  })
  if (!parts$several) {  # the one-term path's fields
    one <- design$re_terms[[1L]]
    design$terms_random <- one$terms
    design$xlevels_random <- one$xlevels
    design$Z <- one$Z
    design$group <- one$factor
  }
  design
}

`%||%` <- function(a, b) if (is.null(a)) b else a

frame_error <- function(e) {
  msg <- conditionMessage(e)
  if (grepl("object '.*' not found", msg)) {
    return(paste0("unknown column in the formula: ", sub(".*object '(.*)' not found.*", "\\1", msg),
                  " is neither a column of data nor a variable"))
  }
  if (grepl("missing values in object", msg)) {
    return("missing values in the model's columns (na.action = na.fail)")
  }
  msg
}

check_response <- function(fr, fixed) {
  y <- stats::model.response(fr)
  name <- deparse1(fixed[[2L]])
  if (!is.numeric(y) || !is.null(dim(y))) {
    stop("the response '", name, "' must be a numeric vector, not ", class(y)[1L], call. = FALSE)
  }
  if (any(!is.finite(y))) stop("the response '", name, "' has infinite values", call. = FALSE)
  as.numeric(y)
}

# Indices of the terms that must stay so the kept columns are coded as in the full fit:
# the terms holding a kept column and every term whose variables are a subset of one
# of those (its margins decide contrasts versus full dummy coding).
kept_terms <- function(tt, assign, keep_columns) {
  used <- setdiff(unique(assign[keep_columns]), 0L)
  fac <- attr(tt, "factors")
  if (!length(used) || !length(fac)) return(integer(0))
  inside <- function(j, u) all(fac[, u] > 0 | fac[, j] == 0)
  which(vapply(seq_len(ncol(fac)), function(j) any(vapply(used, inside, TRUE, j = j)), TRUE))
}

# The fixed-effects terms reduced to the kept columns' terms (offsets kept), with the
# prediction variables of the full terms: new data then needs only these variables.
reduce_terms <- function(tt, keep) {
  labels <- attr(tt, "term.labels")[keep]
  vars <- as.list(attr(tt, "variables"))[-1L]
  offsets <- vapply(vars[attr(tt, "offset")], deparse1, "")
  rhs <- c(labels, offsets)
  if (!length(rhs)) rhs <- "1"
  form <- stats::reformulate(rhs, intercept = attr(tt, "intercept") == 1L,
                             env = environment(tt))
  out <- stats::delete.response(stats::terms(form))
  old <- vapply(vars, deparse1, "")
  new <- vapply(as.list(attr(out, "variables"))[-1L], deparse1, "")
  pv <- as.list(attr(tt, "predvars"))[-1L]
  attr(out, "predvars") <- as.call(c(quote(list), pv[match(new, old)]))
  attr(out, "dataClasses") <- attr(tt, "dataClasses")[new]
  out
}

# Terms for predict(): reduced to the selected columns when that codes them exactly as
# in the fit (checked on the fitting rows), else every term. Attribute "exact": the
# terms make exactly the selected columns (then formula(fit) is the selected model).
prediction_terms <- function(design, columns) {
  full <- stats::delete.response(design$terms)
  attr(full, "exact") <- ncol(design$X) == length(columns)
  keep <- kept_terms(design$terms, attr(design$X, "assign"), columns)
  reduced <- tryCatch(reduce_terms(design$terms, keep), error = function(e) NULL)
  if (is.null(reduced)) return(full)
  rows <- design$data[match(rownames(design$frame), rownames(design$data)), , drop = FALSE]
  Xr <- tryCatch(fixed_matrix(reduced, rows, design$contrasts, design$xlevels),
                 error = function(e) NULL)
  names_sel <- colnames(design$X)[columns]
  if (is.null(Xr) || !all(names_sel %in% colnames(Xr))) return(full)
  same <- isTRUE(all.equal(unname(Xr[, names_sel, drop = FALSE]),
                           unname(design$X[, columns, drop = FALSE]), tolerance = 1e-10))
  if (!same) return(full)
  attr(reduced, "exact") <- ncol(Xr) == length(columns)
  reduced
}

# The fixed design of (new) rows from terms, levels and contrasts; offsets summed.
fixed_matrix <- function(tt, data, contrasts, xlevels) {
  present <- vapply(as.list(attr(tt, "variables"))[-1L], deparse1, "")
  xlevels <- xlevels[names(xlevels) %in% present]
  # model.frame() re-levels C(f, ...) and says its contrasts are dropped: contrasts.arg
  # below puts them back, so that one message is noise
  mf <- withCallingHandlers(
    stats::model.frame(tt, data, na.action = stats::na.pass, xlev = xlevels),
    warning = function(w) {
      if (grepl("^contrasts dropped from factor", conditionMessage(w))) invokeRestart("muffleWarning")
    })
  contrasts <- contrasts[names(contrasts) %in% present]
  X <- stats::model.matrix(tt, mf, contrasts.arg = if (length(contrasts)) contrasts)
  off <- stats::model.offset(mf)
  attr(X, "offset") <- if (is.null(off)) rep(0, nrow(X)) else as.numeric(off)
  X
}

# One random-effects term's model matrix on (new) rows.
random_matrix <- function(term, data) {
  tt <- term$terms
  present <- vapply(as.list(attr(tt, "variables"))[-1L], deparse1, "")
  mf <- stats::model.frame(tt, data, na.action = stats::na.pass,
                           xlev = term$xlevels[names(term$xlevels) %in% present])
  stats::model.matrix(tt, mf)
}

# The fixed-effects term labels of the selected model. Whole terms when the selected
# columns are whole terms; otherwise each column of a partly selected term is written
# as an expression of the data's variables that makes exactly that column (checked
# on the fitting rows): `I(as.numeric(site == "b"))` for one level of a factor,
# `I(x * (site == "b"))` for one column of an interaction, `I(poly(...)[, 1])` with
# poly's coefficients for one column of a matrix term. NULL when some column has no
# such expression (then formula() says so rather than claim a model it did not fit).
selected_model_labels <- function(design, columns, terms_predict, exact) {
  if (exact) return(attr(terms_predict, "term.labels"))
  tt <- design$terms
  assign <- attr(design$X, "assign")
  labels <- attr(tt, "term.labels")
  whole <- vapply(seq_along(labels), function(t) all(which(assign == t) %in% columns), TRUE)
  out <- character()
  for (t in sort(unique(assign[columns]))) {
    if (t == 0L) next
    if (whole[t]) {
      out <- c(out, labels[t])
      next
    }
    for (j in columns[assign[columns] == t]) {
      expr <- column_expression(tt, t, design$frame, design$X[, j])
      if (is.null(expr)) return(NULL)
      out <- c(out, expr)
    }
  }
  out
}

# An expression of the term's variables whose value is `target`, or NULL: each
# variable contributes its values (numeric), one column (matrix: poly, ns) or the
# indicator of one level (factor, character, logical); the product is compared with
# the design column.
column_expression <- function(tt, term, frame, target, max_tries = 5000L) {
  fac <- attr(tt, "factors")
  var_rows <- which(fac[, term] > 0)
  vars <- rownames(fac)[var_rows]
  predvars <- as.list(attr(tt, "predvars"))[-1L]
  var_names <- vapply(as.list(attr(tt, "variables"))[-1L], deparse1, "")
  pieces <- lapply(vars, function(v) {
    value <- frame[[v]]
    text <- deparse1(predvars[[match(v, var_names)]], width.cutoff = 500L,
                     control = c("keepNA", "keepInteger", "niceNames", "digits17"))
    if (is.factor(value) || is.character(value) || is.logical(value)) {
      levs <- if (is.factor(value)) levels(value) else sort(unique(as.character(value)))
      return(lapply(levs, function(l) list(
        text = sprintf("(%s == %s)", text, deparse1(l)), value = as.numeric(value == l),
        indicator = TRUE)))
    }
    if (is.matrix(value)) {
      return(lapply(seq_len(ncol(value)), function(c) list(
        text = sprintf("%s[, %d]", text, c), value = as.numeric(value[, c]), indicator = FALSE)))
    }
    list(list(text = text, value = as.numeric(value), indicator = FALSE))
  })
  sizes <- vapply(pieces, length, 1L)
  if (prod(sizes) > max_tries) return(NULL)
  grid <- as.matrix(expand.grid(lapply(sizes, seq_len)))
  for (r in seq_len(nrow(grid))) {
    chosen <- Map(function(p, i) p[[i]], pieces, grid[r, ])
    value <- Reduce(`*`, lapply(chosen, `[[`, "value"))
    if (isTRUE(all.equal(value, as.numeric(target), tolerance = 1e-12, check.attributes = FALSE))) {
      text <- paste(vapply(chosen, `[[`, "", "text"), collapse = " * ")
      all_indicators <- all(vapply(chosen, `[[`, TRUE, "indicator"))
      return(if (all_indicators) sprintf("I(as.numeric(%s))", text) else sprintf("I(%s)", text))
    }
  }
  NULL
}
