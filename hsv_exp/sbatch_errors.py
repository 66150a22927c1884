"""sbatch refusing a job, reported as one line (used by hydra_plugins/hsv_exp_launcher).

`launcher=slurm` and `launcher=local_slurm` use that launcher: Hydra's submitit one. When sbatch
refuses the job array (a GPU request on a cluster without GPUs, an unknown partition, more memory
than a node has), submitit raises a FailedJobError that Hydra prints as a 30-line traceback after
submitit has printed sbatch's stderr. This prints `error: sbatch refused the jobs: <sbatch's
message>; <the launcher key to change>` instead, and exits 2 like every other user error.
"""

from __future__ import annotations

import subprocess

# (a word of sbatch's message, lower case) -> what to change; the first match wins.
HINTS = (
    ("gres", "on a CPU-only cluster set hydra.launcher.gpus_per_node=null"),
    ("partition", "set hydra.launcher.partition=... (or HSV_SLURM_PARTITION)"),
    ("account", "set hydra.launcher.account=... (or HSV_SLURM_ACCOUNT)"),
    ("qos", "set hydra.launcher.qos=... (or HSV_SLURM_QOS)"),
    ("memory", "lower hydra.launcher.mem_gb"),
    ("time limit", "lower hydra.launcher.timeout_min"),
    ("node configuration", "ask for less per job: hydra.launcher.cpus_per_task, mem_gb or gpus_per_node=null"),
)
FALLBACK_HINT = "check the hydra.launcher.* settings (conf/launcher/slurm.yaml, conf/local/)"


def refusal_line(stderr: str) -> str:
    """sbatch's stderr as one `error:` line with the launcher key to change."""
    lines = [line.strip().removeprefix("sbatch: error: ").removeprefix("sbatch: ") for line in stderr.splitlines()]
    message = "; ".join(line for line in lines if line) or "no message"
    hint = next((hint for word, hint in HINTS if word in message.lower()), FALLBACK_HINT)
    return f"error: sbatch refused the jobs: {message}; {hint}"


class WithoutSbatchErrors:
    """sys.stderr minus the copy of sbatch's stderr that submitit prints before raising (it goes
    into the one line instead); everything else passes through."""

    def __init__(self, stream):
        self.stream, self.dropped = stream, False

    def write(self, text: str) -> int:
        if text.startswith("sbatch: ") or (self.dropped and text == "\n"):
            self.dropped = text != "\n"
            return len(text)
        self.dropped = False
        return self.stream.write(text)

    def __getattr__(self, name):
        return getattr(self.stream, name)


def refused_submission(exc: BaseException) -> str | None:
    """sbatch's stderr if `exc` (a submitit FailedJobError) is sbatch refusing the jobs, else None
    (a job that failed)."""
    cause = exc.__cause__
    if isinstance(cause, subprocess.CalledProcessError) and "sbatch" in str(cause.cmd[0]):
        return cause.stderr or str(exc)
    return None
