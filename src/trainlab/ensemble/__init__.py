"""Ensembles: `combine` (the Ensemble module, its votes and fitted weights, its file) and
`assemble` (the ensemble stage's choice of members on held-out predictions)."""
