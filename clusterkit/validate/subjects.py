"""What a check result is about: its ``subject`` text and the same thing as structured fields.

A judge names a result's subject through one of these helpers, so that the text people read
(``gpu3/link7``) and the fields that telemetry tags points by (``gpu=3, link=7``) are made
from the same numbers in one place and cannot disagree. No reader ever has to parse
``subject``. Each helper returns keyword arguments for :class:`~clusterkit.models.CheckResult`::

    CheckResult(check="nvlink.speed", **on_link(3, 7), status=Status.FAIL, ...)

A check about the whole node (``gpu.count``, ``system.memory``) has no subject and none of
the fields.
"""

from __future__ import annotations

from typing import TypedDict


class Subject(TypedDict, total=False):
    """The subject fields of a :class:`~clusterkit.models.CheckResult` (see there)."""

    subject: str
    gpu: int
    peer_gpu: int
    device: str
    port: int
    link: int
    path: str


def on_gpu(index: int) -> Subject:
    """One GPU: ``gpu5``."""
    return {"subject": f"gpu{index}", "gpu": index}


def on_link(gpu: int, link: int) -> Subject:
    """One NVLink link of a GPU: ``gpu3/link7``."""
    return {"subject": f"gpu{gpu}/link{link}", "gpu": gpu, "link": link}


def on_pair(gpu: int, peer: int) -> Subject:
    """A pair of GPUs: ``gpu2-gpu5``."""
    return {"subject": f"gpu{gpu}-gpu{peer}", "gpu": gpu, "peer_gpu": peer}


def on_device(name: str) -> Subject:
    """An RDMA device (HCA, NIC) as a whole: ``mlx5_2``."""
    return {"subject": name, "device": name}


def on_port(device: str, port: int) -> Subject:
    """One port of an RDMA device: ``mlx5_2/1``."""
    return {"subject": f"{device}/{port}", "device": device, "port": port}


def on_path(path: str) -> Subject:
    """A file system path (a mount point, a directory): ``/mnt/weights``."""
    return {"subject": path, "path": path}
