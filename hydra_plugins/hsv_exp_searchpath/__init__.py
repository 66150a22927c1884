"""Puts hsv_exp's conf/ on Hydra's search path, so sweep files in sweeps/ (`-cd sweeps -cn NAME`)
can build on conf/config.yaml and its groups."""

from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

CONF_DIR = Path(__file__).resolve().parent.parent.parent / "conf"


class HsvExpSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider="hsv_exp", path=f"file://{CONF_DIR}")
