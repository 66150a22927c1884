"""The GLUE metrics of hsv_exp as a Hugging Face `evaluate` module that loads offline from this folder:

    import evaluate
    from hsv_exp.glue_metrics import EVALUATE_PATH
    metric = evaluate.load(EVALUATE_PATH, "rte")          # config name = a task of conf/task/
    metric.compute(predictions=[1, 0, 1], references=[1, 1, 1])   # -> {"accuracy": 0.666...}

The numbers are hsv_exp.glue_metrics.compute's (the scikit-learn/SciPy code is written there once);
which metrics a task reports is its `task.metrics` in conf/task/<task>.yaml, as in a run.
"""

import datasets
import evaluate
import numpy as np

from hsv_exp.glue_metrics import compute, task_metrics


class GlueMetric(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        # float64 for STS-B scores, so the numbers are exactly glue_metrics.compute's on the same arrays
        kind = "float64" if "pearson" in task_metrics(self.config_name) else "int64"
        return evaluate.MetricInfo(
            description=__doc__, citation="", inputs_description="predictions: class ids (scores for STS-B); references: the labels",
            features=datasets.Features({"predictions": datasets.Value(kind), "references": datasets.Value(kind)}))

    def _compute(self, predictions, references) -> dict[str, float]:
        return compute(task_metrics(self.config_name), np.asarray(predictions), np.asarray(references))
