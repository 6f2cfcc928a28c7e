"""Node-side probes and judges per domain, fleet judges, and the node-check runner.

Each domain module offers ``probe(ctx) -> Measurement`` (gets raw facts off the node) and
``judge(measurement, profile) -> list[CheckResult]`` (pure, no I/O).
"""
