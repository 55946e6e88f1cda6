"""Throughput benchmarks: the in-process engine ceiling and an HTTP load generator."""
