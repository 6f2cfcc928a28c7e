"""clusterkit — validate GPU fleets and launch inference on the healthy part.

Heavy modules (paramiko, pydantic, NVML) are imported lazily so that ``clusterkit node-check``
starts fast on every node; what node-check builds are Records (``clusterkit.record``), and it
never imports pydantic.
"""

__version__ = "0.1.0"
