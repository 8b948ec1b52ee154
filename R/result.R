# The R object: plain values copied out of the Python result.

as_lmm_scope <- function(out, call, formula_text, row_names) {
  chr <- function(x) as.character(unlist(x))
  num <- function(x) as.numeric(unlist(x))
  names_all <- chr(out$names)
  fixef_names <- chr(out$fixef_names)
  random_names <- chr(out$random_names)
  group_labels <- chr(out$group_labels)
  p_fix <- length(fixef_names)
  q <- length(random_names)

  dropped <- as.integer(num(out$dropped_rows))
  kept <- if (length(dropped)) row_names[-dropped] else row_names
  na_action <- NULL
  if (length(dropped)) {
    na_action <- structure(dropped, names = row_names[dropped], class = "omit")
  }
  path <- as.data.frame(lapply(out$path, function(col) unlist(col)), stringsAsFactors = FALSE)
  coef_path <- matrix(num(out$coef_path), ncol = length(names_all),
                      dimnames = list(as.character(num(out$path_k)), names_all))
  a_history <- as.data.frame(lapply(out$a_history, function(col) unlist(col)),
                             stringsAsFactors = FALSE)
  inference <- NULL
  if (!is.null(out$inference)) {
    inference <- data.frame(estimate = num(out$inference$estimate),
                            std_error = num(out$inference$std_error),
                            row.names = chr(out$inference$term))
    attr(inference, "df") <- as.numeric(out$inference$df)
  }
  structure(list(
    call = call,
    inference = inference,
    formula = formula_text,
    coefficients = stats::setNames(num(out$coef), names_all),
    support = chr(out$support),
    selected = chr(out$selected),
    unpenalised = chr(out$unpenalised),
    k = as.integer(out$k),
    a = as.numeric(out$a),
    criterion = as.character(out$criterion),
    path = path,
    coef_path = coef_path,
    a_history = a_history,
    fixef = stats::setNames(num(out$fixef), fixef_names),
    vcov = matrix(num(out$vcov), p_fix, p_fix, dimnames = list(fixef_names, fixef_names)),
    sigma = as.numeric(out$sigma),
    psi = matrix(num(out$psi), q, q, dimnames = list(random_names, random_names)),
    ranef = matrix(num(out$ranef), length(group_labels), q,
                   dimnames = list(group_labels, random_names)),
    group_name = as.character(out$group_name),
    response = as.character(out$response),
    loglik = as.numeric(out$loglik),
    df = as.integer(out$df),
    deviance = as.numeric(out$deviance),
    nobs = as.integer(out$nobs),
    ngroups = as.integer(out$ngroups),
    method = as.character(out$method),
    singular = isTRUE(out$singular),
    n_dropped = as.integer(out$n_dropped),
    na.action = na_action,
    fitted = stats::setNames(num(out$fitted), kept),
    fitted_population = stats::setNames(num(out$fitted_population), kept),
    residuals = stats::setNames(num(out$residuals), kept),
    predictor = as.character(out$predictor)
  ), class = "lmm_scope")
}
