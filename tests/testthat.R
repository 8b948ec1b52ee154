library(testthat)
library(lmmscope)

test_check("lmmscope")
