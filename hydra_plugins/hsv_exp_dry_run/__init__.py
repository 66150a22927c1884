"""The `hydra/sweeper=hsv_dry_run` plugin (hsv_exp.dry_run): lists a command's jobs instead of
launching them. Hydra instantiates plugins only from the hydra_plugins package, hence this shim."""

from typing import Any, Optional

from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig


class DryRunSweeper(Sweeper):
    def __init__(self, max_batch_size: Optional[int] = None, params: Optional[dict] = None, single: bool = False):
        self.params = dict(params or {})
        self.single = single
        self.config: Optional[DictConfig] = None
        self.hydra_context: Any = None

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        self.hydra_context, self.config = hydra_context, config

    def sweep(self, arguments: list) -> Any:
        from hsv_exp.dry_run import sweep

        sweep(self.hydra_context.config_loader, self.config, self.params, arguments, self.single)
        return []
