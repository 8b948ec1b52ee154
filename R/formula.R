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

# Bar terms in parentheses joined by `+`: `(z | g)`, `(1 | a) + (x || b)`.
is_paren_bars <- function(term) {
  if (is.call(term) && identical(term[[1L]], as.name("+")) && length(term) == 3L) {
    return(is_paren_bars(term[[2L]]) && is_paren_bars(term[[3L]]))
  }
  is.call(term) && identical(term[[1L]], as.name("(")) && is.call(term[[2L]]) &&
    (identical(term[[2L]][[1L]], as.name("|")) || identical(term[[2L]][[1L]], as.name("||")))
}

# The design syntax `y ~ x1 + x2 | (z | g)` read as lme4's `y ~ x1 + x2 + (z | g)`, and
# `y ~ x | (1 | a) + (1 | b)` as `y ~ x + (1 | a) + (1 | b)`.
as_lme4_formula <- function(formula) {
  if (!inherits(formula, "formula") || length(formula) != 3L) {
    stop("formula must be a two-sided formula (or a string), such as y ~ x1 + x2 + (1 | cluster)",
         call. = FALSE)
  }
  rhs <- formula[[3L]]
  if (is.call(rhs) && identical(rhs[[1L]], as.name("|")) && is_paren_bars(rhs[[3L]])) {
    formula[[3L]] <- call("+", rhs[[2L]], rhs[[3L]])
  }
  formula
}

# The parts of a mixed-model formula: response, fixed-effects formula and the bar terms
# expanded as lme4 does (`terms`: random, group, group_name each). One bar `(z | g)` with
# g one column keeps its fields `random`, `group`, `group_name` (the one-term path).
parse_mixed_formula <- function(formula) {
  formula <- as_lme4_formula(formula)
  bars <- find_bars(formula[[3L]])
  if (!length(bars)) {
    stop("the formula has no random-effects term such as (1 | cluster) or (z1 | cluster): ",
         deparse1(formula), call. = FALSE)
  }
  terms <- unlist(lapply(bars, expand_bar), recursive = FALSE)
  fixed <- formula
  rhs <- no_bars(formula[[3L]])
  fixed[[3L]] <- if (is.null(rhs)) 1 else rhs
  out <- list(formula = formula, fixed = fixed, terms = terms,
              several = length(terms) > 1L || !is.name(terms[[1L]]$group))
  if (!out$several) out <- c(out, terms[[1L]])
  out
}

# One bar as lme4's terms: `(z || g)` -> (1 | g) + (0 + z | g) (expandDoubleVerts), and
# `(z | a/b)` -> (z | b:a) + (z | a) (findbars' expansion of the nesting slash).
expand_bar <- function(bar) {
  groups <- grouping_factors(bar[[3L]])
  randoms <- if (identical(bar[[1L]], as.name("||"))) uncorrelated(bar[[2L]]) else list(bar[[2L]])
  out <- list()
  for (g in groups) for (r in randoms) {
    out[[length(out) + 1L]] <- list(random = r, group = g, group_name = deparse1(g))
  }
  out
}

grouping_factors <- function(group) {
  if (is.call(group) && identical(group[[1L]], as.name("("))) return(grouping_factors(group[[2L]]))
  if (is.call(group) && identical(group[[1L]], as.name("/"))) {
    outer <- grouping_factors(group[[2L]])
    inner <- call(":", group[[3L]], outer[[1L]])  # b:a, inside every level of the outer
    return(c(list(inner), outer))
  }
  if (!is.name(group) && !(is.call(group) && identical(group[[1L]], as.name(":")) &&
                           all(vapply(all.names(group), function(n) n == ":" ||
                                        n %in% all.vars(group), TRUE)))) {
    stop("the grouping factor ", deparse1(group), " is an expression: lmmscope takes a column, ",
         "an interaction a:b or a nesting a/b as the grouping factor (lme4 would evaluate the ",
         "expression and use its values as a factor); compute it as a column of data first",
         call. = FALSE)
  }
  list(group)
}

# lme4's `||`: the intercept (unless removed) and each other term of the left side as a
# term of its own, (1 | g) + (0 + x | g) + ...
uncorrelated <- function(random) {
  tt <- stats::terms(stats::as.formula(call("~", random)))
  labels <- attr(tt, "term.labels")
  out <- lapply(labels, function(l) call("+", 0, str2lang(l)))
  if (attr(tt, "intercept") == 1L) out <- c(list(1), out)
  out
}

# The grouping factor of a term on a frame: each variable made a factor (lme4's
# factorize), a:b their interaction with labels "a:b", unused levels dropped.
grouping_factor <- function(group, data, env) {
  vars <- all.vars(group)
  values <- lapply(stats::setNames(vars, vars), function(v) {
    x <- eval(as.name(v), data, env)
    if (is.factor(x)) x else factor(x)
  })
  factor(eval(group, values, baseenv()))
}

# `.` expanded to every column of data except the response and the grouping variables
# (R's meaning of `.`, minus the grouping column, which would duplicate the random intercept).
expand_dot <- function(fixed, data, groups) {
  if (!("." %in% all.vars(fixed))) return(fixed)
  keep <- setdiff(names(data), unlist(lapply(groups, all.vars)))
  tt <- stats::terms(fixed, data = data[keep])
  out <- stats::formula(tt)
  environment(out) <- environment(fixed)
  out
}
