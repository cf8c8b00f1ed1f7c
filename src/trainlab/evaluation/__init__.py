"""The evaluate stage's library: every final model scored on the test split, side by side.

    scores  test-split scores, calibration, per-class scores, the champion and its runner-up
    stats   confidence intervals and the paired test that says when two models are tied
    plots   the confusion matrix, predicted-vs-actual and reliability figures
    report  the stage's declared files and what its MLflow run records
    stage   the stage end to end: score, report, register the champion
"""
