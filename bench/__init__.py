"""driftline's benchmarks (`make bench`, `make bench-quick`); see docs/BENCHMARKS.md."""
