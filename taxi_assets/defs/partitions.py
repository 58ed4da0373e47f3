"""Partitions shared by the capabilities: calendar months of TLC data and UTC days of the prediction log."""

import dagster as dg

from taxi_assets import settings

monthly_partitions = dg.MonthlyPartitionsDefinition(start_date=settings.current().start_month, fmt="%Y-%m")

# Today's partition exists (end_offset=1): the log of the current day is ingested while it grows.
prediction_days = dg.DailyPartitionsDefinition(start_date=settings.current().predlog_start_day, end_offset=1)
