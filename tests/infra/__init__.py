"""Reusable real-component test infrastructure (real sshd fleets on loopback, node venvs).

Used by tests/integration and by benchmarks/. Nothing here is part of the clusterkit package.
"""
