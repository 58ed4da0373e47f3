"""Trip data: TLC green-taxi months as published, the zone lookup, and the cleaned modelling table in DuckDB."""
