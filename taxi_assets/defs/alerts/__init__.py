"""Alarms on the assets they are about: Alertmanager's alerts recorded as observations of their assets, and the runs
their runbooks name."""
