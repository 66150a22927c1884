"""How a SLURM sweep decides that a job has ended: submitit's sacct watcher, but a job that sacct
reports ended while slurmctld still holds it in the queue is not ended.

A job that times out or is preempted is checkpointed and requeued by submitit from inside the job
(`scontrol requeue`). For a moment SLURM's accounting can then report the job FAILED (its batch step
was killed by the requeue) before it shows it pending again. submitit's watcher caches the first
ended state it reads, so a sweep that polled in that moment waited 15 s for a result, then failed
with "has not produced any output (state: FAILED)" while the requeued job went on without it (seen
in tests/test_slurm_faults.py). slurmctld's own view (`scontrol show job`) has no such gap: while
it lists the job as pending, running or requeued, the sweep waits.

`launcher=slurm` and `launcher=local_slurm` install RequeueAwareWatcher for the sweep's jobs
(hydra_plugins/hsv_exp_launcher/).
"""

from __future__ import annotations

import re
import subprocess

from submitit.slurm.slurm import SlurmInfoWatcher

# slurmctld's job states in which the job will still run (or is running): `man squeue`, JOB STATE CODES.
QUEUED_STATES = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
                 "SUSPENDED", "RESIZING", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD"}


def queued_state(scontrol_show_job: str) -> str | None:
    """The JobState of `scontrol show job` output when it is one in which the job will still run; else None."""
    found = re.search(r"\bJobState=(\S+)", scontrol_show_job)
    return found.group(1) if found and found.group(1) in QUEUED_STATES else None


def still_queued(job_id: str) -> bool:
    """Whether slurmctld holds `job_id` as pending, running or requeued (False once it has ended or
    been purged from slurmctld's memory, or when scontrol cannot answer: sacct's word stands then)."""
    try:
        shown = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return shown.returncode == 0 and queued_state(shown.stdout) is not None


class RequeueAwareWatcher(SlurmInfoWatcher):
    """submitit's watcher, except that an ended state read from sacct counts only once slurmctld no
    longer holds the job in its queue (one `scontrol show job` per such reading)."""

    def is_done(self, job_id: str, mode: str = "standard") -> bool:
        return super().is_done(job_id, mode) and not still_queued(job_id)
