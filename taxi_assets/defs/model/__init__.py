"""The ride-duration model: one trained per month behind a blocking quality gate, and the one deployed."""
