"""clusterkit — validate GPU fleets and launch inference on the healthy part.

Heavy modules (paramiko, pydantic models, NVML) are imported lazily so that
``clusterkit node-check`` starts fast on every node.
"""

__version__ = "0.1.0"
