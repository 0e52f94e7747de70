"""A training run's metrics log: written as JSON lines plus TensorBoard events, and read back.

``<workdir>/metrics.jsonl`` holds one JSON object per log entry: ``step``,
``split`` ("train" or "val") and the metrics (:func:`mtcnn_jax.losses.finish_eval`'s
for "val"; the train step's for "train"). ``<workdir>/tensorboard/`` holds the
same scalars as ``<split>/<metric>``. :class:`MetricsLog` writes both (the train
loop, :mod:`mtcnn_jax.train`); :func:`read_metrics` reads the file back (the
sweep's tables and plots, the notebooks).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

from mtcnn_jax import files

METRICS_FILE = "metrics.jsonl"


class MetricsLog:
    """JSON-lines metrics file plus TensorBoard events (tensorboardX, no TensorFlow).

    ``resume_step``: the step a resumed run restarts from; what a killed run
    logged after it (it will be logged again) is dropped from the file, as are
    lines cut short or damaged, and TensorBoard purges it. ``enabled=False``
    (every process but the first of a multi-host run) makes every call do nothing.
    """

    def __init__(self, workdir, resume_step: int = 0, enabled: bool = True):
        self.enabled = enabled
        if not enabled:
            return
        workdir = Path(workdir)
        path = workdir / METRICS_FILE
        if path.exists():
            keep = []
            for line in path.read_text(errors="replace").splitlines():
                try:
                    record = json.loads(line)
                except ValueError:  # a line cut short by the kill, or damaged
                    continue
                step = record.get("step", 0) if isinstance(record, dict) else None
                if isinstance(step, int) and step <= resume_step:
                    keep.append(line)
            files.write_atomically(path, "".join(line + "\n" for line in keep))
        self.file = open(path, "a")
        from tensorboardX import SummaryWriter  # noqa: PLC0415 (pulls no TensorFlow)

        self.tb = SummaryWriter(str(workdir / "tensorboard"), purge_step=resume_step + 1 if resume_step else None)

    def write(self, step: int, split: str, metrics: Mapping[str, float]) -> None:
        """Append one entry (and its TensorBoard scalars); flushed at once."""
        if not self.enabled:
            return
        record = {"step": int(step), "split": split, **{k: float(v) for k, v in metrics.items()}}
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        for k, v in metrics.items():
            self.tb.add_scalar(f"{split}/{k}", float(v), int(step))

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            self.tb.close()


def read_metrics(rundir, split: str = "val") -> list[dict]:
    """The ``split`` entries of a run's ``metrics.jsonl``, in file order (a line cut short by a kill is skipped).

    ``[]`` when the run has logged nothing yet.
    """
    out = []
    try:
        text = (Path(rundir) / METRICS_FILE).read_text(errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("split") == split:
            out.append(rec)
    return out
