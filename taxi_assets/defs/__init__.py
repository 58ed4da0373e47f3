"""The platform's Dagster definitions, one folder per capability, loaded by `dg.load_from_defs_folder`.

trip_data/ (TLC months in DuckDB), model/ (training, quality gate, deployment), batch_monitoring/ (monthly
scoring, drift and reports), online_monitoring/ (the service's prediction log, online drift). Resources used by
more than one capability are in resources.py, partitions in partitions.py.

Like taxi_assets.core, these modules import pandas, scikit-learn and Evidently inside the functions that use them:
a run loads all of them before its first step.
"""
