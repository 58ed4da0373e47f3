"""Pure logic of the platform, shared by the Dagster definitions, the Bento service and the command-line tools.

Nothing here imports Dagster or BentoML (tests/test_definitions.py::test_import_contract). pandas, scikit-learn and
Evidently are imported inside the functions that use them, and for annotations only under `TYPE_CHECKING`: every
Dagster run's process, code server and webserver imports these modules while loading the code location, and a run
that only loads TLC months into DuckDB needs none of them (pandas alone is about 0.7 s of CPU per process).
"""
