"""Small helpers shared by the command line, the benchmarks and the reports."""
