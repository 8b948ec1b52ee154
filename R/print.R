# print() of a fit: lme4's layout, plus what the selection kept and why.

#' @rdname lmm_scope-methods
#' @export
print.lmm_scope <- function(x, digits = max(3, getOption("digits") - 3), ...) {
  cat(header_lines(x), sep = "\n")
  cat_random_and_fixed(x, x$fixef, digits, gap = "", lmm_label = "Fixed Effects:")
  if (x$singular) cat("boundary (singular) fit: see help('isSingular')\n")
  invisible(x)
}

# The random-effects block and the fixed effects, as print (lme4's "Fixed Effects:") and
# summary ("Fixed effects:", after a blank line) show them.
cat_random_and_fixed <- function(x, coefficients, digits, gap, lmm_label) {
  cat(gap, "Random effects:\n", sep = "")
  cat(paste0(" ", format_varcorr(VarCorr(x), digits)), sep = "\n")
  cat(groups_line(x))
  cat(gap, if (inherits(x, "lmm")) lmm_label else "Fixed effects (refit on the selected model):",
      "\n", sep = "")
  print(coefficients, digits = digits)
}

header_lines <- function(x) {
  refit <- sprintf("%s criterion %.4f, logLik %.4f, AIC %.4f, BIC %.4f",
                   if (x$REML) "REML" else "ML", deviance(x), as.numeric(logLik(x)),
                   stats::AIC(x), stats::BIC(x))
  dropped <- if (x$n_dropped > 0) sprintf("(%d observations deleted due to missingness)", x$n_dropped)
  if (inherits(x, "lmm")) {
    return(c(paste0("Linear mixed model fit by ", if (x$REML) "REML" else "maximum likelihood",
                    " (lmmscope)"), formula_lines(x$formula), dropped, refit))
  }
  n_cand <- length(x$names) - length(x$unpenalised)
  how <- if (isTRUE(x$k_given)) "fixed by the user" else if (identical(x$criterion, "cv"))
    "cross-validation" else toupper(x$criterion)
  c("Sparse linear mixed model: quasi-likelihood best subset (lmmscope)",
    formula_lines(x$formula),
    sprintf("Selected %d of %d candidate predictors (k %s), a = %s",
            x$k, n_cand, if (isTRUE(x$k_given)) "fixed" else paste("chosen by", how),
            format(signif(x$a, 4))),
    wrap_list("Selected: ", if (length(x$support)) x$support else "(none)"),
    kept_lines(x), dropped, paste0("Refit by ", refit))
}

# "Formula: ..." wrapped at the console width; a very long one is cut after a few lines.
formula_lines <- function(f, max_lines = 6L) {
  text <- deparse1(f)
  out <- wrap_list("Formula: ", text)
  if (length(out) > max_lines) {
    out <- c(out[seq_len(max_lines - 1L)],
             sprintf("    ... (%d characters; formula(fit) is the selected model)", nchar(text)))
  }
  out
}

wrap_list <- function(label, items, sep = ", ", indent = 0L) {
  width <- max(40L, getOption("width") - 2L)
  strwrap(paste0(label, paste(items, collapse = sep)), width = width, indent = indent,
          exdent = indent + 4L)
}

# The columns kept without selection (unpenalised, not counted in k), grouped by why.
kept_lines <- function(x) {
  kept <- x$unpenalised
  if (!length(kept)) return(NULL)
  why <- ifelse(kept == "(Intercept)", "intercept",
                ifelse(kept %in% x$always, "always =",
                       ifelse(kept %in% unlist(lapply(re_terms(x), `[[`, "names")),
                              "random slope (penalize_random_slopes = TRUE makes it a candidate)",
                              "unpenalised")))
  c("Kept without selection (not counted in k):",
    unlist(lapply(unique(why), function(w) wrap_list(paste0(w, ": "), kept[why == w],
                                                     indent = 2L))))
}
