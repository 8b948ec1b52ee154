#' A small clustered data set with a known sparse truth
#'
#' Simulated (no Python needed): \code{clusters} clusters of \code{size} rows,
#' predictors \code{x1..xp} (standard normal), random intercept and random
#' slopes on \code{z1}, \code{z2}. The true fixed effects are
#' \code{x1 = 1}, \code{x5 = 0.5}, \code{x10 = 0.3}, intercept 0; the others are zero.
#'
#' @param clusters Number of clusters.
#' @param size Rows per cluster.
#' @param p Number of candidate predictors (at least 10).
#' @param seed Random seed; the caller's random state is left as it was.
#' @return A data.frame with columns \code{y}, \code{x1..xp}, \code{z1}, \code{z2},
#'   \code{cluster} (a factor).
#' @export
#' @examples
#' d <- lmm_scope_example()
#' dim(d)
lmm_scope_example <- function(clusters = 30L, size = 10L, p = 20L, seed = 1L) {
  stopifnot(p >= 10L)
  old <- if (exists(".Random.seed", envir = globalenv())) get(".Random.seed", envir = globalenv())
  on.exit(if (is.null(old)) rm(".Random.seed", envir = globalenv()) else
    assign(".Random.seed", old, envir = globalenv()))
  set.seed(seed)
  n <- clusters * size
  X <- matrix(stats::rnorm(n * p), n, p, dimnames = list(NULL, paste0("x", seq_len(p))))
  Z <- matrix(stats::rnorm(n * 2), n, 2, dimnames = list(NULL, c("z1", "z2")))
  g <- rep(seq_len(clusters), each = size)
  b <- matrix(stats::rnorm(clusters * 3, sd = c(1, 0.7, 0.5)), clusters, 3, byrow = TRUE)
  beta <- numeric(p)
  beta[c(1, 5, 10)] <- c(1, 0.5, 0.3)
  y <- drop(X %*% beta) + b[g, 1] + Z[, 1] * b[g, 2] + Z[, 2] * b[g, 3] + stats::rnorm(n, sd = 0.5)
  data.frame(y = y, X, Z, cluster = factor(sprintf("c%02d", g)))
}
