"""``MetricFrame``: per-group metrics over the rows of a table, and their disparities.

Shaped like fairlearn's ``MetricFrame``::

    mf = MetricFrame(["tpr", "selection_rate"], df[["race", "sex"]], y_true=y, y_pred=pred)
    mf.overall              # {metric: value over all rows}
    mf.by_group             # DataFrame: group ("white&male", ...) x metric
    mf.difference()         # {metric: max - min over groups}
    mf.ratio(), mf.std(), mf.group_min(), mf.group_max(), mf.max_deviation(),
    mf.coefficient_of_variation(), mf.equity_scaled()

Metrics are registry names (``fairness.metrics.METRICS``), callables, or a mapping
``{column name: name or callable}``. Each is called with the data columns its parameters name
and the ``params`` it accepts; a metric with a ``grouped`` method (the confusion rates) computes
every group at once. Groups with fewer than ``min_group_size`` rows stay in ``by_group`` but
are left out of every aggregate, as are groups where a metric is undefined (NaN).
Aggregates are plain ``{metric: float}`` dicts and only ``by_group`` builds a pandas frame,
so simulators can use the frame without importing pandas.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from base.errors import UsageError
from fairness import aggregate
from fairness.groups import Groups
from fairness.metrics import METRICS

NAN = float("nan")


def resolve_metrics(metrics: Any) -> dict[str, Callable[..., Any]]:
    """A name, a callable, a list of them or a mapping -> {column name: callable}."""
    if isinstance(metrics, Mapping):
        items = list(metrics.items())
    else:
        seq = [metrics] if isinstance(metrics, str) or callable(metrics) else list(metrics)
        items = [(m if isinstance(m, str) else getattr(m, "__name__", repr(m)), m) for m in seq]
    return {str(name): METRICS.get(m) if isinstance(m, str) else m for name, m in items}


@functools.lru_cache(maxsize=256)
def _parameters(fn: Callable[..., Any]) -> tuple[inspect.Parameter, ...]:
    return tuple(inspect.signature(fn).parameters.values())


def _arguments(fn: Callable[..., Any], columns: Mapping[str, np.ndarray],
               params: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(the data columns ``fn`` names, the params it accepts); a missing column raises."""
    cols, kw = {}, {}
    for p in _parameters(fn):
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.kind == p.KEYWORD_ONLY or p.name in params:
            if p.name in params:
                kw[p.name] = params[p.name]
        elif p.name in columns:
            cols[p.name] = columns[p.name]
        elif p.default is p.empty:
            raise UsageError(f"metric {getattr(fn, '__name__', fn)!r} needs a column "
                             f"{p.name!r}; given: {', '.join(columns) or '(none)'}")
    return cols, kw


class MetricFrame:
    """Per-group values of named metrics. See the module docstring.

    Args:
        metrics: registry name(s), callable(s) or ``{name: name | callable}``.
        sensitive_features: DataFrame (n, A) (intersectional groups ``a&b``), Series,
            (n,) values, or :class:`fairness.groups.Groups` (codes + names, may include
            groups without rows).
        min_group_size: groups with fewer rows are left out of the aggregates.
        params: keyword parameters for the metrics that accept them (``labels``,
            ``average``, ``pos_label``, ``zero_division``).
        **columns: the data, shape (n,) each, e.g. ``y_true=..., y_pred=...``.
    """

    def __init__(self, metrics: Any, sensitive_features: Any, *, min_group_size: int = 1,
                 params: Mapping[str, Any] | None = None, **columns: Any):
        self.groups = Groups.of(sensitive_features)
        self.metrics = resolve_metrics(metrics)
        self.min_group_size = int(min_group_size)
        data = {k: np.asarray(v) for k, v in columns.items()}
        n = len(self.groups.codes)
        bad = [f"{k} ({len(v)})" for k, v in data.items() if len(v) != n]
        if bad:
            raise UsageError(f"columns: lengths {', '.join(bad)} != {n} rows of sensitive_features")
        self.counts = self.groups.counts
        self._by_group: dict[str, np.ndarray] = {}
        self._overall: dict[str, float] = {}
        for name, fn in self.metrics.items():
            cols, kw = _arguments(fn, data, params or {})
            self._by_group[name], self._overall[name] = self._evaluate(fn, cols, kw)

    def _evaluate(self, fn, cols, kw) -> tuple[np.ndarray, float]:
        codes, G = self.groups.codes, len(self.groups)
        grouped = getattr(fn, "grouped", None)
        if grouped is not None:
            values = np.asarray(grouped(codes, G, **cols, **kw), dtype=np.float64)
            overall = grouped(np.zeros(len(codes), np.int64), 1, **cols, **kw)[0]
            return values, float(overall)
        values = np.full(G, NAN)
        for g in np.flatnonzero(self.counts):
            m = codes == g
            values[g] = fn(**{k: v[m] for k, v in cols.items()}, **kw)
        return values, float(fn(**cols, **kw)) if len(codes) else NAN

    # ----------------------------------------------------------------- views
    @property
    def overall(self) -> dict[str, float]:
        """{metric: value over all rows}."""
        return dict(self._overall)

    @property
    def by_group(self):
        """DataFrame group x metric; groups without rows (or an undefined value) hold NaN."""
        import pandas as pd

        return pd.DataFrame(self._by_group, index=pd.Index(self.groups.names, name="group"))

    def group_values(self, metric: str) -> np.ndarray:
        """The metric of every group, shape (G,) (NaN where undefined or empty)."""
        return self._by_group[metric].copy()

    @property
    def reportable(self) -> np.ndarray:
        """Mask (G,) of the groups with at least ``min_group_size`` rows."""
        return self.counts >= max(self.min_group_size, 1)

    @property
    def too_small(self) -> list[str]:
        """``"group (n=K)"`` for the groups with rows but fewer than ``min_group_size``."""
        return [f"{g} (n={int(c)})" for g, c in zip(self.groups.names, self.counts)
                if 0 < c < self.min_group_size]

    def values(self, metric: str) -> np.ndarray:
        """The metric of the reportable groups, NaN elsewhere, shape (G,)."""
        return np.where(self.reportable, self._by_group[metric], NAN)

    def _each(self, fn: Callable[..., float], **kw: Any) -> dict[str, float]:
        return {m: float(fn(self.values(m), **kw)) for m in self.metrics}

    # ----------------------------------------------------------------- aggregates
    def difference(self, *, min_groups: int = 2) -> dict[str, float]:
        """max - min over groups, per metric."""
        return self._each(aggregate.difference, min_groups=min_groups)

    def ratio(self, *, min_groups: int = 2) -> dict[str, float]:
        """min / max over groups, per metric."""
        return self._each(aggregate.ratio, min_groups=min_groups)

    def group_min(self) -> dict[str, float]:
        return self._each(aggregate.group_min)

    def group_max(self) -> dict[str, float]:
        return self._each(aggregate.group_max)

    def std(self, *, ddof: int = 1) -> dict[str, float]:
        """Standard deviation over groups (sample, ddof=1, by default)."""
        return self._each(aggregate.std, ddof=ddof)

    def coefficient_of_variation(self, *, ddof: int = 0) -> dict[str, float]:
        """std / mean over groups (population std by default)."""
        return self._each(aggregate.coefficient_of_variation, ddof=ddof)

    def max_deviation(self) -> dict[str, float]:
        """max_g |by_group - overall|, per metric."""
        return {m: float(aggregate.max_deviation(self.values(m), self._overall[m]))
                for m in self.metrics}

    def equity_scaled(self, *, ddof: int = 1) -> dict[str, float]:
        """overall / (1 + std over groups), per metric."""
        return {m: float(aggregate.equity_scaled(self._overall[m], self.values(m), ddof=ddof))
                for m in self.metrics}
