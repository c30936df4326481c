"""Inputs of every fairness metric: groups (intersectional keys) and class labels as codes.

* :class:`Groups` -- integer group codes (n,) and group names; several sensitive columns form
  intersectional groups named by joining the values with ``&`` (``white&male``).
* :func:`encode_labels` -- class labels -> integer codes over one class list.
* :func:`resolve_average` -- ``auto`` / ``macro`` / ``binary`` and the positive class.

Bad input raises :class:`base.errors.UsageError` naming the field.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from base.errors import UsageError

if TYPE_CHECKING:  # pandas is imported where a frame is handled: envs stay light
    import pandas as pd

Average = Literal["auto", "macro", "binary"]
SEPARATOR = "&"


def group_codes(sensitive: pd.DataFrame | pd.Series, columns: Sequence[str] | None = None
                ) -> tuple[np.ndarray, list[str]]:
    """Integer group code (n,) for the intersection of ``columns`` (default: all) and the
    sorted group names (``"white"`` for one column, ``"white&male"`` for several)."""
    import pandas as pd

    df = sensitive.to_frame() if isinstance(sensitive, pd.Series) else sensitive
    columns = list(df.columns) if columns is None else list(columns)
    cols = [df[c].astype(str).to_numpy(dtype=object) for c in columns]
    key = cols[0] if len(cols) == 1 else np.array(
        [SEPARATOR.join(parts) for parts in zip(*cols, strict=True)], dtype=object)
    codes, uniques = pd.factorize(key, sort=True)
    return codes.astype(np.int64), [str(u) for u in uniques]


@dataclass(frozen=True)
class Groups:
    """Group membership of n rows: ``codes`` (n,) int in [0, len(names)) and ``names``.

    Build with :meth:`of` from sensitive features, or directly from codes when some groups
    may have no rows (they are still reported, with NaN values and n = 0).
    """

    codes: np.ndarray
    names: list[str]

    def __post_init__(self):
        codes = np.asarray(self.codes)
        if codes.ndim != 1 or (codes.size and not np.issubdtype(codes.dtype, np.integer)):
            raise UsageError(f"groups: codes must be a 1-D integer array, got {codes.dtype} "
                             f"shape {codes.shape}")
        if codes.size and (codes.min() < 0 or codes.max() >= len(self.names)):
            raise UsageError(f"groups: codes must lie in [0, {len(self.names)})")
        object.__setattr__(self, "codes", codes.astype(np.int64, copy=False))
        object.__setattr__(self, "names", [str(n) for n in self.names])

    @classmethod
    def of(cls, sensitive: Any) -> Groups:
        """Groups of a DataFrame (n, A) (intersections of all columns), a Series or a 1-D
        array of group values; a :class:`Groups` is returned as is."""
        if isinstance(sensitive, Groups):
            return sensitive
        import pandas as pd

        if isinstance(sensitive, (pd.DataFrame, pd.Series)):
            frame = sensitive
        else:
            arr = np.asarray(sensitive, dtype=object)
            if arr.ndim != 1:
                raise UsageError(f"sensitive_features: expected (n,) values or a DataFrame, "
                                 f"got shape {arr.shape}")
            frame = pd.Series(arr, name="group")
        if frame.isna().to_numpy().any():
            raise UsageError("sensitive_features: contains missing values (fill them, e.g. "
                             "with 'missing')")
        return cls(*group_codes(frame))

    def __len__(self) -> int:
        return len(self.names)

    @property
    def counts(self) -> np.ndarray:
        """Rows per group, shape (G,)."""
        return np.bincount(self.codes, minlength=len(self.names))


def encode_labels(y_true: Any, y_pred: Any, labels: Sequence | None = None
                  ) -> tuple[np.ndarray, np.ndarray, list]:
    """Integer codes (n,) for y_true and y_pred over the class list; errors name the field."""
    import pandas as pd

    yt = np.asarray(y_true)
    yp = np.asarray(y_pred)
    if yt.ndim != 1 or yp.ndim != 1:
        raise UsageError(f"y_true/y_pred: expected 1-D arrays, got shapes {yt.shape}, {yp.shape}")
    if len(yt) != len(yp):
        raise UsageError(f"y_pred: length {len(yp)} != y_true length {len(yt)}")
    for name, arr in (("y_true", yt), ("y_pred", yp)):
        if pd.isna(pd.Series(arr)).any():
            raise UsageError(f"{name}: contains missing values (NaN/None)")
    if labels is None:
        classes = sorted(set(yt.tolist()) | set(yp.tolist()))
    else:
        classes = list(labels)
        if len(set(classes)) != len(classes):
            raise UsageError(f"labels: duplicates in {classes}")
        for name, arr in (("y_true", yt), ("y_pred", yp)):
            bad = sorted(set(arr.tolist()) - set(classes), key=str)
            if bad:
                raise UsageError(f"{name}: values {bad[:5]} are not in labels {classes}")
    index = {c: i for i, c in enumerate(classes)}
    return (np.fromiter((index[v] for v in yt.tolist()), np.int64, len(yt)),
            np.fromiter((index[v] for v in yp.tolist()), np.int64, len(yp)), classes)


def resolve_average(average: str, classes: list, pos_label: Any) -> tuple[str, int | None]:
    """('macro', None) or ('binary', index of the positive class in ``classes``).

    ``auto`` is binary for exactly two classes (positive = ``pos_label`` or the larger
    label), macro otherwise.
    """
    if average not in ("auto", "macro", "binary"):
        raise UsageError(f"average: got {average!r}; allowed: 'auto', 'macro', 'binary'")
    if average == "auto":
        average = "binary" if len(classes) == 2 else "macro"
    if average == "macro":
        return "macro", None
    if pos_label is None:
        if len(classes) > 2:
            raise UsageError(f"pos_label: required for binary metrics with classes {classes}")
        pos_label = classes[-1]
    if pos_label not in classes:
        raise UsageError(f"pos_label: {pos_label!r} is not in labels {classes}")
    return "binary", classes.index(pos_label)
