"""Measure first: what a deployment did, beside what its plan predicted (pure, except
measure/prometheus.py, the one module that talks to Prometheus)."""
