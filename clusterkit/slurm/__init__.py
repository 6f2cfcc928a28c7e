"""Slurm, behind one seam: partitions and node states, drain and resume, jobs and templates.

::

    backend.py      SlurmBackend: the one interface to Slurm (nodes, drain/resume, jobs,
                    reservations); CliBackend (sinfo/squeue --json, scontrol, sbatch, scancel)
                    and the optional pyslurm backend
    reason.py       owned drain reasons: ``clusterkit: <checks>: <detail>``, made and parsed
    actions.py      drain planning (pure), the circuit breaker, dry-run diffs, applying a plan
    srun.py         the srun transport: one ``srun`` step runs a command on N nodes
    healthcheck.py  node-check --healthcheck's own drain and resume (slurmd's HealthCheckProgram)
    templates.py    Jinja2 job templates (sbatch text from a pure function)
    cli.py          ``clusterkit slurm …``

Nothing here imports Slurm's Python bindings at module level: the CLI backend works everywhere.
"""
