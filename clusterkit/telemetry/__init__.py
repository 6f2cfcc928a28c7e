"""Telemetry: a run's results as metrics (docs/metrics.md).

- :mod:`clusterkit.telemetry.lineproto`: InfluxDB line protocol, encoded (and parsed back) exactly
  per the spec; pure.
- :mod:`clusterkit.telemetry.points`: the schema: which points a :class:`~clusterkit.models.FleetReport`
  (or one :class:`~clusterkit.models.NodeReport`) becomes; pure.
- :mod:`clusterkit.telemetry.sink`: synchronous writes of pre-built line protocol through
  influxdb-client to an InfluxDB v2 write API, with clusterkit's own batching and bounded retries.
- :mod:`clusterkit.telemetry.spool`: batches the store did not take, kept on disk and replayed in
  order.
- :mod:`clusterkit.telemetry.emit`: :func:`~clusterkit.telemetry.emit.emit` (replay, write, spool:
  never raises for store trouble) and :func:`~clusterkit.telemetry.emit.write_prom_textfile`
  (node_exporter's textfile collector).
- :mod:`clusterkit.telemetry.cli`: ``clusterkit telemetry replay|push`` and the options and
  function ``validate`` uses.

Nothing here is imported by node-check unless it prints points (``node_points``): the package
and :mod:`lineproto`/:mod:`points` import nothing heavy.
"""
