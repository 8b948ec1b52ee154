#' Select the fixed effects of a linear mixed model
#'
#' Fits the quasi-likelihood best-subset estimator of Li, Cai and Li (2022):
#' each cluster is whitened by \eqn{\Sigma_a = a Z_i Z_i' + I}, the support of
#' the fixed effects is chosen by best-subset selection, and the selected model
#' is refitted by REML (or ML) exactly as \code{lme4::lmer} would. All numerics
#' run in the Python core; the result is a plain R object.
#'
#' @param formula A formula (or a string) in lme4's syntax,
#'   \code{y ~ x1 + x2 + (z1 + z2 | cluster)}, or in the design syntax,
#'   \code{y ~ x1 + x2 | (z1 + z2 | cluster)}. \code{.} on the fixed side means
#'   every column except the response and the grouping column; factors,
#'   interactions and transforms such as \code{log(x)} and \code{I(x^2)} work.
#'   One grouping factor. A fixed intercept is included (and never penalised)
#'   unless \code{0 +} or \code{- 1} removes it.
#' @param data A data.frame (numeric, integer, logical, factor and character
#'   columns).
#' @param k Support size, not counting unpenalised terms: an integer, \code{NULL}
#'   (search \code{0..k_max}, choose by \code{criterion}) or \code{"cv"}
#'   (cross-validation over whole clusters).
#' @param a The scale of the working covariance \eqn{a Z Z' + I}: a number,
#'   \code{NULL} (start at 1 and iterate the REML variance ratio on the selected
#'   model until the support is stable) or \code{"cv"} (grid search by held-out
#'   clusters' prediction error).
#' @param always Names of fixed-effect columns (as \code{coef()} names them) that are
#'   always kept and not counted in \code{k}.
#' @param criterion Information criterion used when \code{k = NULL}: \code{"gic"}
#'   (default), \code{"ebic"}, \code{"bic"} or \code{"aic"}.
#' @param k_max Largest support size searched; default \code{min(p, N / log N, 50)}.
#' @param cv_folds Number of folds (made of whole clusters) for \code{"cv"}.
#' @param method \code{"REML"} (default) or \code{"ML"} for the refit.
#' @param na.action Rows with missing values in the model's columns are dropped
#'   (\code{na.omit}, the default, and reported) or make an error (\code{na.fail}).
#' @param inference Compute debiased estimates and cluster-sandwich standard
#'   errors for every candidate column (used by \code{confint} and \code{summary}):
#'   \code{TRUE}, \code{FALSE}, or \code{NULL} (default: only when there are at most
#'   500 candidate columns, since it runs one node-wise lasso per column; about
#'   30 s for 1,000 columns on two cores).
#' @param verbose Print progress over the tuning grid.
#' @return An object of class \code{lmm_scope}: a list of plain R values with
#'   methods \code{print}, \code{summary}, \code{coef}, \code{fixef}, \code{ranef},
#'   \code{VarCorr}, \code{sigma}, \code{logLik}, \code{AIC}, \code{BIC},
#'   \code{nobs}, \code{vcov}, \code{predict}, \code{fitted}, \code{residuals},
#'   \code{confint} and \code{plot}.
#' @references Li, S., Cai, T. T. and Li, H. (2022). Inference for
#'   high-dimensional linear mixed-effects models: a quasi-likelihood approach.
#'   \emph{Journal of the American Statistical Association}, 117, 1835--1846.
#' @export
#' @examplesIf lmmscope_available()
#' d <- lmm_scope_example()
#' fit <- lmm_scope(y ~ . + (z1 + z2 | cluster), data = d)
#' fit
#' coef(fit)[coef(fit) != 0]
lmm_scope <- function(formula, data, k = NULL, a = NULL, always = NULL,
                      criterion = c("gic", "ebic", "bic", "aic"), k_max = NULL,
                      cv_folds = 5L, method = c("REML", "ML"), na.action = "na.omit",
                      inference = NULL, verbose = FALSE) {
  call <- match.call()
  criterion <- match.arg(criterion)
  method <- match.arg(method)
  formula_text <- formula_string(formula)
  data <- check_data(data)
  na_action <- na_action_name(na.action)
  check_k(k)
  check_a(a)
  columns <- model_columns(formula, formula_text, data)
  if (na_action == "fail" && anyNA(data[columns])) {
    stop("missing values in the model's columns (na.action = na.fail)", call. = FALSE)
  }
  bridge <- core()
  py_data <- r_columns(data[columns])
  out <- call_core(bridge$fit, formula_text, py_data$columns, py_data$levels,
                   k = k, a = a, always = always, criterion = criterion,
                   k_max = k_max, cv_folds = as.integer(cv_folds), method = method,
                   inference = inference, verbose = isTRUE(verbose))
  fit <- as_lmm_scope(out, call, formula_text, rownames(data))
  if (fit$n_dropped > 0) {
    message("lmm_scope: dropped ", fit$n_dropped, " row(s) with missing values (na.omit)")
  }
  fit
}

# The formula as the string the Python parser reads (long formulas kept whole).
formula_string <- function(formula) {
  if (is.character(formula) && length(formula) == 1L) {
    text <- formula
  } else if (inherits(formula, "formula")) {
    text <- paste(trimws(deparse(formula, width.cutoff = 500L)), collapse = " ")
  } else {
    stop("formula must be a formula or a single string, such as y ~ x1 + x2 + (1 | cluster)",
         call. = FALSE)
  }
  if (!grepl("|", text, fixed = TRUE)) {
    stop("the formula has no random-effects term such as (1 | cluster) or (z1 | cluster): ",
         text, call. = FALSE)
  }
  python_powers(text)
}

# Inside I(...) the expression is evaluated by Python, where ^ is XOR: use **.
python_powers <- function(text) {
  chars <- strsplit(text, "", fixed = TRUE)[[1]]
  out <- character(length(chars))
  depth_in_I <- 0L
  depth <- 0L
  for (i in seq_along(chars)) {
    ch <- chars[i]
    if (ch == "(") {
      depth <- depth + 1L
      if (depth_in_I == 0L && i > 1L && chars[i - 1L] == "I" &&
          (i == 2L || !grepl("[A-Za-z0-9._]", chars[i - 2L]))) {
        depth_in_I <- depth
      }
    } else if (ch == ")") {
      if (depth == depth_in_I) depth_in_I <- 0L
      depth <- depth - 1L
    }
    out[i] <- if (ch == "^" && depth_in_I > 0L) "**" else ch
  }
  paste(out, collapse = "")
}

check_data <- function(data) {
  if (!is.data.frame(data)) {
    stop("data must be a data.frame, got ", class(data)[1], call. = FALSE)
  }
  as.data.frame(data, stringsAsFactors = FALSE, optional = TRUE)
}

na_action_name <- function(na.action) {
  if (is.function(na.action)) {
    if (identical(na.action, stats::na.omit)) return("omit")
    if (identical(na.action, stats::na.fail)) return("fail")
  } else if (is.character(na.action) && length(na.action) == 1L) {
    if (na.action %in% c("na.omit", "omit", "na.exclude")) return("omit")
    if (na.action %in% c("na.fail", "fail")) return("fail")
  }
  stop("na.action must be na.omit or na.fail", call. = FALSE)
}

check_k <- function(k) {
  ok <- is.null(k) || identical(k, "cv") ||
    (is.numeric(k) && length(k) == 1L && !is.na(k) && k >= 0 && k == round(k))
  if (!ok) stop("k must be NULL, a non-negative whole number or \"cv\"", call. = FALSE)
}

check_a <- function(a) {
  ok <- is.null(a) || identical(a, "cv") ||
    (is.numeric(a) && length(a) == 1L && is.finite(a) && a >= 0)
  if (!ok) stop("a must be NULL, a non-negative number or \"cv\"", call. = FALSE)
}

# Columns the formula reads; every column when it uses '.'.
model_columns <- function(formula, text, data) {
  vars <- tryCatch(all.vars(if (inherits(formula, "formula")) formula else stats::as.formula(text)),
                   error = function(e) ".")
  if ("." %in% vars) return(names(data))
  intersect(names(data), vars)
}

# A data.frame as Python-ready columns: doubles (NA -> NaN) or factor codes + levels.
r_columns <- function(data) {
  columns <- list()
  levels <- list()
  for (name in names(data)) {
    x <- data[[name]]
    if (is.logical(x)) x <- factor(x, levels = c(FALSE, TRUE))
    if (is.character(x)) x <- factor(x)
    if (is.factor(x)) {
      codes <- as.integer(x) - 1L
      codes[is.na(codes)] <- -1L
      columns[[name]] <- codes
      levels[[name]] <- levels(x)
    } else if (is.numeric(x)) {
      columns[[name]] <- as.double(x)
    } else {
      stop("column '", name, "' has unsupported type ", class(x)[1],
           " (use numeric, integer, logical, factor or character)", call. = FALSE)
    }
  }
  list(columns = columns, levels = levels)
}
