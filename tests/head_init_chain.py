"""A two-stage EH-FT (LoRA) run on a tiny BERT, for the SIGTERM-resume tests in test_head_init.py.

`python tests/head_init_chain.py RUN_DIR` trains stage 1 (2 epochs) and stage 2 (2 epochs), printing
train.py's "step N ..." line at every optimizer step of either stage, and writes RUN_DIR/metrics.json
(atomically) when both completed; on SIGTERM it exits 143 after the checkpoint, like the CLI.
"""

import copy
import sys
from pathlib import Path

import torch

TESTS = Path(__file__).resolve().parent
sys.path[:0] = [str(TESTS), str(TESTS.parent)]  # conftest helpers, and this checkout's hsv_exp

from conftest import tiny_model  # noqa: E402
from test_training import TASK, toy_data  # noqa: E402

from hsv_exp.atomic import write_json_atomic  # noqa: E402
from hsv_exp.checkpoint import Preempted  # noqa: E402
from hsv_exp.classifier import LayerClassifier
from hsv_exp.truncation import truncate_model  # noqa: E402
from hsv_exp.config import SelectConfig, TrainConfig, TuningConfig  # noqa: E402
from hsv_exp.head_init import HeadInitConfig, train_with_head_init  # noqa: E402
from hsv_exp.selection import select_layers  # noqa: E402
from hsv_exp.tuning import METHODS  # noqa: E402

STEPS_PER_EPOCH = 10  # 40 examples, batch 4
STAGE1_EPOCHS = 2
TOTAL_EPOCHS = 4


def main(run_dir: Path) -> None:
    torch.set_num_threads(1)
    pretrained = tiny_model("bert")
    selection = select_layers(SelectConfig(name="manual", head_layer=3, k=2), 4)  # layer 1 frozen: the cache is used
    build = lambda chosen: LayerClassifier(truncate_model(copy.deepcopy(pretrained), chosen.head_layer).encoder, chosen, num_labels=2)
    cfg = HeadInitConfig(name="ehft", method="lora", epochs=STAGE1_EPOCHS)  # LoRA: PET modules in the stage-1 checkpoint
    train_cfg = TrainConfig(lr=1e-3, epochs=TOTAL_EPOCHS, batch_size=4, log_every_steps=1, cache_frozen="memory")
    try:
        run = train_with_head_init(cfg, build, selection, lambda model: METHODS["full"](model, TuningConfig()),
                                   toy_data(40, 0), {"dev": toy_data(30, 1)}, TASK, train_cfg, seed=3, pad_token_id=0,
                                   run_dir=run_dir)
    except Preempted:
        sys.exit(143)
    write_json_atomic(run_dir / "metrics.json", {"history": run.history, "best": run.train.best, "last": run.train.last,
                                                 "resumed_from": run.train.resumed_from, "head_init": run.head_init.summary(),
                                                 "wall_s": run.wall_s, "train_time_s": run.train_time_s})


if __name__ == "__main__":
    main(Path(sys.argv[1]))
