"""`dnntrick tune` and `compare --tune`: hyperparameter search on Optuna over normal runs.

`search.py` parses and checks the search space, `pool.py` runs a trial's runs (in process, in
worker processes or as Ray tasks) and stops one early, `study.py` the Optuna study and the trial
loop, `report.py` what a study shows and writes, `compare.py` each variant tuned before compare.
"""
