"""Dashboards under the embedded default: the monitoring figures as points of the local Evidently workspace."""
