# Model formulas with lme4's semantics: the random-effects bars found and removed the
# way lme4's findbars() / nobars() / subbars() do, so lme4 is not needed to parse them.

# Every `a | g` (and `a || g`) term of a formula's right-hand side, as lme4::findbars.
find_bars <- function(term) {
  if (is.name(term) || !is.language(term)) return(NULL)
  head <- term[[1L]]
  if (identical(head, as.name("("))) return(find_bars(term[[2L]]))
  if (identical(head, as.name("|")) || identical(head, as.name("||"))) return(list(term))
  if (length(term) == 2L) return(find_bars(term[[2L]]))
  if (length(term) < 2L) return(NULL)
  c(find_bars(term[[2L]]), find_bars(term[[3L]]))
}

# The right-hand side without its bar terms, as lme4::nobars (NULL when nothing is left).
no_bars <- function(term) {
  if (!any(c("|", "||") %in% all.names(term))) return(term)
  if (is.call(term) && (identical(term[[1L]], as.name("|")) ||
                        identical(term[[1L]], as.name("||")))) return(NULL)
  if (length(term) == 2L) {
    inner <- no_bars(term[[2L]])
    if (is.null(inner)) return(NULL)
    term[[2L]] <- inner
    return(term)
  }
  left <- no_bars(term[[2L]])
  right <- no_bars(term[[3L]])
  if (is.null(left)) return(right)
  if (is.null(right)) return(left)
  term[[2L]] <- left
  term[[3L]] <- right
  term
}

# `|` replaced by `+`, so model.frame() sees every variable of a bar (lme4::subbars).
sub_bars <- function(term) {
  if (is.name(term) || !is.language(term)) return(term)
  if (length(term) == 2L) {
    term[[2L]] <- sub_bars(term[[2L]])
    return(term)
  }
  if (identical(term[[1L]], as.name("|")) || identical(term[[1L]], as.name("||"))) {
    term[[1L]] <- as.name("+")
  }
  for (i in seq_along(term)[-1L]) term[[i]] <- sub_bars(term[[i]])
  term
}

is_paren_bar <- function(term) {
  is.call(term) && identical(term[[1L]], as.name("(")) && is.call(term[[2L]]) &&
    identical(term[[2L]][[1L]], as.name("|"))
}

# The design syntax `y ~ x1 + x2 | (z | g)` read as lme4's `y ~ x1 + x2 + (z | g)`.
as_lme4_formula <- function(formula) {
  if (!inherits(formula, "formula") || length(formula) != 3L) {
    stop("formula must be a two-sided formula (or a string), such as y ~ x1 + x2 + (1 | cluster)",
         call. = FALSE)
  }
  rhs <- formula[[3L]]
  if (is.call(rhs) && identical(rhs[[1L]], as.name("|")) && is_paren_bar(rhs[[3L]])) {
    formula[[3L]] <- call("+", rhs[[2L]], rhs[[3L]])
  }
  formula
}

# The parts of a mixed-model formula: response, fixed-effects formula, the one bar.
parse_mixed_formula <- function(formula) {
  formula <- as_lme4_formula(formula)
  bars <- find_bars(formula[[3L]])
  if (!length(bars)) {
    stop("the formula has no random-effects term such as (1 | cluster) or (z1 | cluster): ",
         deparse1(formula), call. = FALSE)
  }
  if (any(vapply(bars, function(b) identical(b[[1L]], as.name("||")), TRUE))) {
    stop("'||' (uncorrelated random effects) is not supported: lmmscope fits an ",
         "unstructured covariance; write (z | g)", call. = FALSE)
  }
  if (length(bars) > 1L) {
    stop("lmmscope fits one random-effects term with one grouping factor; the formula has ",
         length(bars), ": ", paste(vapply(bars, deparse1, ""), collapse = ", "), call. = FALSE)
  }
  bar <- bars[[1L]]
  if (!is.name(bar[[3L]])) {
    stop("the grouping factor must be one column, got ", deparse1(bar[[3L]]),
         ": nested (a/b) or crossed (a:b) grouping is not supported by the R front yet ",
         "(lme4 fits it as several terms, (1 | a) + (1 | a:b); lmmscope's Python lmm() ",
         "does too)", call. = FALSE)
  }
  fixed <- formula
  rhs <- no_bars(formula[[3L]])
  fixed[[3L]] <- if (is.null(rhs)) 1 else rhs
  list(formula = formula, fixed = fixed, random = bar[[2L]], group = bar[[3L]],
       group_name = deparse1(bar[[3L]]))
}

# `.` expanded to every column of data except the response and the grouping variables
# (R's meaning of `.`, minus the grouping column, which would duplicate the random intercept).
expand_dot <- function(fixed, data, group) {
  if (!("." %in% all.vars(fixed))) return(fixed)
  keep <- setdiff(names(data), all.vars(group))
  tt <- stats::terms(fixed, data = data[keep])
  out <- stats::formula(tt)
  environment(out) <- environment(fixed)
  out
}
