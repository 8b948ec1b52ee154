# Pictures of the selection: the information-criterion path and the coefficient path.

#' Criterion path and coefficient path of an lmm_scope fit
#'
#' Draws the information criterion (or cross-validation error) against the
#' support size with the chosen \code{k} marked, or the selection-stage
#' coefficient path: one line per column that enters some support, labelled at
#' its end and in the legend (the \code{legend_max} largest at the chosen
#' \code{k}). With ggplot2 installed, \code{ggplot2::autoplot(fit, type)} draws
#' the same as a ggplot.
#'
#' @param x,object An \code{lmm_scope} fit.
#' @param type \code{"criterion"} or \code{"coefficients"}.
#' @param legend_max Most columns named in the legend of the coefficient path.
#' @param ... Passed to \code{plot} (\code{matplot} for the coefficients).
#' @return \code{plot}: \code{x}, invisibly; \code{autoplot}: a ggplot.
#' @export
#' @examplesIf lmmscope_available()
#' fit <- lmm_scope(y ~ . + (z1 + z2 | cluster), data = lmm_scope_example())
#' plot(fit)
#' plot(fit, type = "coefficients")
plot.lmm_scope <- function(x, type = c("criterion", "coefficients"), legend_max = 10L, ...) {
  type <- match.arg(type)
  if (type == "criterion") {
    path <- criterion_path(x)
    graphics::plot(path$k, path$value, type = "b", pch = 19, xlab = "support size k",
                   ylab = path$label, main = paste(path$label, "by support size"), ...)
    graphics::abline(v = x$k, lty = 2, col = "red")
    graphics::mtext(sprintf("chosen k = %d", x$k), side = 3, adj = 1, col = "red")
  } else {
    cp <- coefficient_path(x)
    ks <- as.numeric(rownames(cp))
    n <- ncol(cp)
    col <- rep_len(c("black", "red", "blue", "darkgreen", "purple", "orange", "brown",
                     "magenta"), n)
    lty <- rep_len(1:3, n)
    graphics::matplot(ks, cp, type = "s", lty = lty, col = col, xlab = "support size k",
                      ylab = "selection-stage coefficient",
                      main = "Coefficient path (unpenalised columns not shown)", ...)
    graphics::abline(v = x$k, lty = 2, col = "grey40")
    graphics::abline(h = 0, col = "grey80")
    graphics::text(max(ks), cp[nrow(cp), ], colnames(cp), pos = 2, cex = 0.7, col = col)
    chosen <- cp[match(as.character(x$k), rownames(cp), nomatch = nrow(cp)), ]
    show <- utils::head(order(-abs(chosen)), legend_max)
    graphics::legend("topleft", legend = colnames(cp)[show], col = col[show], lty = lty[show],
                     bty = "n", cex = 0.75, title = sprintf("at chosen k = %d", x$k))
  }
  invisible(x)
}

criterion_path <- function(x) {
  if (is.null(x$path)) stop("an lmm fit has no selection path to plot", call. = FALSE)
  col <- if (identical(x$criterion, "cv")) "cv_error" else x$criterion
  data.frame(k = x$path$k, value = x$path[[col]],
             label = if (col == "cv_error") "cross-validation error" else toupper(col))
}

# The selection-stage coefficients along k of the penalised columns that enter a support.
coefficient_path <- function(x) {
  if (is.null(x$coef_path)) stop("an lmm fit has no selection path to plot", call. = FALSE)
  cp <- x$coef_path[, setdiff(colnames(x$coef_path), x$unpenalised), drop = FALSE]
  cp[, colSums(cp != 0) > 0, drop = FALSE]
}

#' @rdname plot.lmm_scope
#' @exportS3Method ggplot2::autoplot
autoplot.lmm_scope <- function(object, type = c("criterion", "coefficients"), ...) {
  type <- match.arg(type)
  if (type == "criterion") {
    path <- criterion_path(object)
    return(ggplot2::ggplot(path, ggplot2::aes(x = k, y = value)) +
             ggplot2::geom_line() + ggplot2::geom_point() +
             ggplot2::geom_vline(xintercept = object$k, linetype = 2, colour = "red") +
             ggplot2::labs(x = "support size k", y = path$label[1],
                           title = paste(path$label[1], "by support size"),
                           subtitle = sprintf("chosen k = %d", object$k)))
  }
  cp <- coefficient_path(object)
  long <- data.frame(k = rep(as.numeric(rownames(cp)), ncol(cp)), value = as.numeric(cp),
                     term = factor(rep(colnames(cp), each = nrow(cp)), levels = colnames(cp)))
  ggplot2::ggplot(long, ggplot2::aes(x = k, y = value, colour = term)) +
    ggplot2::geom_step() +
    ggplot2::geom_hline(yintercept = 0, colour = "grey80") +
    ggplot2::geom_vline(xintercept = object$k, linetype = 2) +
    ggplot2::labs(x = "support size k", y = "selection-stage coefficient", colour = "column",
                  title = "Coefficient path", subtitle = sprintf(
                    "chosen k = %d; unpenalised columns not shown", object$k))
}

utils::globalVariables(c("k", "value", "term"))
