"""NCCL all-reduce validation and localization (``clusterkit nccl``).

One module per concern, from pure to I/O:

* :mod:`~clusterkit.nccl.models`   the tests of a round, what a launcher measured, the report
* :mod:`~clusterkit.nccl.judge`    a parsed nccl-tests run -> check results (``nccl check``)
* :mod:`~clusterkit.nccl.env`      the NCCL environment: ``NCCL_IB_HCA`` from discovered rails
* :mod:`~clusterkit.nccl.topology` switch topology: Slurm's topology.conf, inventory labels, sim
* :mod:`~clusterkit.nccl.localize` the round schedule and the scoring (pure; a launcher runs it)
* :mod:`~clusterkit.nccl.launch`   launchers: Slurm (srun steps), mpirun over SSH, the simulator
* :mod:`~clusterkit.nccl.watchdog` a per-test timeout, and an end for a test that hangs after
  printing its result
* :mod:`~clusterkit.nccl.cli`      ``nccl check``; :mod:`~clusterkit.nccl.cli_run` ``nccl single``, ``nccl localize``
  (nodes chosen by :mod:`clusterkit.selection`)
"""
