"""A small, learnable task=custom data set written in the test (no GLUE files needed)."""

import csv
import random
from pathlib import Path

POSITIVE = ["good", "great", "fine", "happy", "nice", "best", "love", "bright"]
NEGATIVE = ["bad", "awful", "poor", "sad", "worst", "hate", "dark", "ugly"]
FILLER = ["the", "movie", "was", "a", "film", "story", "and", "it", "very", "day", "of", "people"]


def examples(n: int, seed: int) -> list[tuple[str, str]]:
    """(text, label) rows, labels neg/pos alternating; each text mixes filler with its class's words."""
    rng = random.Random(seed)
    rows = []
    for index in range(n):
        label = ("neg", "pos")[index % 2]
        words = rng.choices(FILLER, k=rng.randint(3, 9)) + rng.choices(POSITIVE if label == "pos" else NEGATIVE, k=2)
        rng.shuffle(words)
        rows.append((" ".join(words), label))
    return rows


def write_task(directory: Path, train: int = 80, dev: int = 40) -> list[str]:
    """Writes train.csv and dev.csv; -> the overrides that select them."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, size, seed in (("train", train, 0), ("dev", dev, 1)):
        with (directory / f"{name}.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "label"])
            writer.writerows(examples(size, seed))
    return ["task=custom", f"task.files.train={directory / 'train.csv'}", f"task.files.dev={directory / 'dev.csv'}"]
