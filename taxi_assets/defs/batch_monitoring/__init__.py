"""Batch monitoring: every month scored by the deployed model, its drift and error against the model's training
month, and the Evidently report."""
