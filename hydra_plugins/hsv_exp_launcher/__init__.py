"""`launcher=slurm` / `launcher=local_slurm`: Hydra's submitit SLURM launcher, except that sbatch
refusing the jobs prints one `error:` line (hsv_exp/sbatch_errors.py) and exits 2 instead of a
30-line traceback, and that a job requeued after a time limit or preemption is waited for even when
sacct reports it ended for a moment (hsv_exp/slurm_watch.py). Hydra loads launchers only from the
hydra_plugins package, hence this home."""

from __future__ import annotations

import sys
from typing import Sequence

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as SubmititSlurmLauncher


class SlurmLauncher(SubmititSlurmLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from submitit.core.utils import FailedJobError
        from submitit.slurm.slurm import SlurmJob

        from hsv_exp.sbatch_errors import WithoutSbatchErrors, refusal_line, refused_submission
        from hsv_exp.slurm_watch import RequeueAwareWatcher

        stderr, sys.stderr = sys.stderr, WithoutSbatchErrors(sys.stderr)
        watcher, SlurmJob.watcher = SlurmJob.watcher, RequeueAwareWatcher(delay_s=600)  # submitit's class-wide watcher
        try:
            return super().launch(job_overrides, initial_job_idx)
        except FailedJobError as exc:
            refused = refused_submission(exc)
            if refused is None:
                raise
            print(refusal_line(refused), file=stderr, flush=True)
            sys.exit(2)
        finally:
            sys.stderr = stderr
            SlurmJob.watcher = watcher
