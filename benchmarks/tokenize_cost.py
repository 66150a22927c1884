"""What tokenizing a task costs a run, against loading the same encodings from a cache (issue 10).

    PYTHONPATH=. python -m benchmarks.tokenize_cost [--tasks rte mrpc stsb cola sst2] [--threads 1]

Prints, per task, the seconds to read the GLUE files, to tokenize the whole train and dev splits
(max_length 128, MiniLM's fast tokenizer) and to unpickle the result: what a content-keyed
tokenization cache would save each run. A run tokenizes only its own (sub)sample and dev split,
and the scan's tokenization is already paid once per task by the scan cache.
"""

from __future__ import annotations

import argparse
import os
import pickle
import tempfile
import time

import torch

from hsv_exp import data as data_lib
from hsv_exp.backbone import load_tokenizer
from hsv_exp.cli import compose

def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["rte", "mrpc", "stsb", "cola", "sst2"])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(f"load average {os.getloadavg()[0]:.2f}; tokenizer threads: the fast tokenizer's own")
    for task in args.tasks:
        cfg = compose([f"task={task}"])
        tokenizer = load_tokenizer(cfg.model)
        started = time.perf_counter()
        splits = [data_lib.load_split(cfg.task, split) for split in ("train", "dev")]
        read = time.perf_counter()
        encoded = [data_lib.encode(tokenizer, split, cfg.train.max_length) for split in splits]
        tokenized = time.perf_counter()
        with tempfile.TemporaryFile() as file:
            pickle.dump(encoded, file)
            file.seek(0)
            unpickle_started = time.perf_counter()
            pickle.load(file)
            unpickled = time.perf_counter()
        print(f"{task}: {len(splits[0])} train + {len(splits[1])} dev examples; read {read - started:.2f} s, "
              f"tokenize {tokenized - read:.2f} s, cache load (unpickle) {unpickled - unpickle_started:.2f} s")


if __name__ == "__main__":
    main()
