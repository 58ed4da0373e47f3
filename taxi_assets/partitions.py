"""Partitions shared by the assets: one per calendar month of TLC data."""

import os

import dagster as dg

START_MONTH = os.getenv("TAXI_START_MONTH", "2021-01")

monthly_partitions = dg.MonthlyPartitionsDefinition(start_date=START_MONTH, fmt="%Y-%m")
