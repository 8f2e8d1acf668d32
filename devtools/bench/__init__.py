"""`make bench`: benchmarks on the real local stack; a table on stdout, JSON in bench-results.json."""
