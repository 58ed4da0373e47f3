"""Online monitoring: the Bento service's prediction log ingested into DuckDB by a sensor, and the drift and error of
recent windows of it."""
