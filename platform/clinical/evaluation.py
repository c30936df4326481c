"""Scoring a policy's held-out answers: the one function behind a training run's evaluations
(:meth:`platform.clinical.driver.Pipeline.evaluate`) and ``python -m platform.evaluate clinical``.

:func:`score_answers` takes the rows (the ``envs.clinical`` schema) and one generated text per
row, parses each answer to an option (an unparseable one predicts no class) and returns flat
metrics: exact-match accuracy (overall and per intersectional group), the share of
unparseable answers and of the most frequent option letter (a collapse check), the clinical report with the FairGRPO authors' definitions (each attribute
on its own, per data source, then averaged; :mod:`fairness.clinical`), optional bootstrap CIs
of the headline keys (``fairness/<key>_ci_low`` / ``_ci_high``) and the intersectional view
(``fairness/intersectional/...`` plus its ``fairness/by_group/...`` groups). Only aggregates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

INVALID = "(invalid)"  # the label of an unparseable answer: predicts no class


def score_answers(rows: Sequence[dict[str, Any]], texts: Sequence[str], attributes: Sequence[str],
                  min_group_size: int = 1, n_boot: int = 0, seed: int = 0) -> dict[str, float]:
    """Metrics of one greedy answer per row (module docstring). ``attributes``: the sensitive
    attributes (e.g. ``["sex", "age_band"]``; ``age_band`` is derived from ``age``)."""
    import pandas as pd

    from envs.clinical.dataset import UNKNOWN, group_keys
    from envs.clinical.rewards import parse_choice
    from fairness.clinical import clinical_fairness_report

    y_true, y_pred, letters = [], [], []
    for row, text in zip(rows, texts):
        opts = [str(o) for o in row["options"]]
        k = parse_choice(text, opts)
        y_true.append(str(row["answer"]))
        y_pred.append(opts[k] if k is not None else INVALID)
        if k is not None:
            letters.append(k)
    hit = np.array([t == p for t, p in zip(y_true, y_pred)])
    top = max((letters.count(v) for v in set(letters)), default=0)
    out = {"eval/accuracy": float(hit.mean()),
           "eval/invalid_rate": float(np.mean([p == INVALID for p in y_pred])),
           # collapse check: the share of the most frequent option letter among valid answers
           "eval/top_answer_share": top / max(len(letters), 1)}
    frame = pd.DataFrame(list(rows))
    inter = group_keys(frame, list(attributes)).tolist()
    for g in sorted(set(inter)):  # exact-match accuracy and size per intersectional group
        mask = np.array(inter) == g
        out[f"eval/by_group/{g}/accuracy"] = float(hit[mask].mean())
        out[f"eval/by_group/{g}/n"] = float(mask.sum())
    sens = pd.DataFrame({a: [None if g == UNKNOWN else g for g in group_keys(frame, [a])]
                         for a in attributes})
    kw = dict(labels=sorted({str(o) for r in rows for o in r["options"]} | {INVALID}),
              dataset=np.array([str(r["data_source"]) for r in rows]), average="macro",
              min_group_size=min_group_size, missing="skip")
    report = clinical_fairness_report(y_true, y_pred, sens, ci=n_boot > 0, n_boot=max(n_boot, 10),
                                      seed=seed, **kw)
    for key, value in report.metrics().items():
        if key.endswith(("/ci_low", "/ci_high")):
            base, side = key.rsplit("/", 1)
            if base.count("/") == 1:  # the headline only (fairness/<key>, overall/<key>)
                out[f"{base}_{side}"] = value
        else:
            out[key] = value
    if len(attributes) > 1:
        name = "&".join(attributes)
        sens_inter = pd.DataFrame({name: [None if g == UNKNOWN else g for g in inter]})
        for k, v in clinical_fairness_report(y_true, y_pred, sens_inter, **kw).metrics().items():
            if k.startswith("fairness/by_group/"):  # the groups training weighs
                out[k] = v
            elif k.startswith("fairness/") and f"/{name}/" not in k:
                out[f"fairness/intersectional/{k.split('/', 1)[1]}"] = v
    return out
