"""What the tests and the benchmarks share: real TLC data, isolated platform folders, and real processes
(Dagster daemon and webserver, `bentoml serve`, Prometheus and the Pushgateway) on free loopback ports."""
