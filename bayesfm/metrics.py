"""Accuracy, calibration and model comparison on held-out data.

:func:`evaluate` computes everything a report needs from one chunked pass over the
posterior predictive of a test table: RMSE, MAE, the mean log predictive density (a proper
scoring rule), the coverage curve of central intervals, PIT values, coverage by user-activity
tercile and for cold-start rows, and for classification AUC, log-loss and a reliability
curve. :func:`loo` and :func:`compare` wrap ArviZ's PSIS-LOO for the training fit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy.special import logsumexp
from scipy.stats import norm, rankdata

from . import idata as idata_mod
from .data import Categorical
from .recommend import PairScorer, entity_roles, top_n

if TYPE_CHECKING:  # pragma: no cover
    from .estimators import BayesianFM

__all__ = [
    "COVERAGE_LEVELS",
    "PredictiveCheck",
    "auc",
    "compare",
    "coverage_at_k",
    "coverage_curve",
    "evaluate",
    "expected_ndcg",
    "log_loss",
    "loo",
    "mae",
    "map_at_k",
    "ndcg_at_k",
    "precision_at_k",
    "ranking_metrics",
    "recall_at_k",
    "reliability_curve",
    "rmse",
]

COVERAGE_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
PARETO_K_BINS = (
    (-np.inf, 0.5, "good"),
    (0.5, 0.7, "ok"),
    (0.7, 1.0, "bad"),
    (1.0, np.inf, "very bad"),
)


# ---------------------------------------------------------------------- point metrics
def rmse(y: np.ndarray, prediction: np.ndarray) -> float:
    """Root mean squared error.

    Parameters
    ----------
    y : array-like
        Observed values.
    prediction : array-like
        Predictions, same shape as ``y``.

    Returns
    -------
    float
        ``sqrt(mean((y - prediction) ** 2))``.

    Examples
    --------
    >>> import bayesfm as bfm
    >>> round(bfm.metrics.rmse([3, 4, 5], [2.5, 4, 5.5]), 3)
    0.408
    """
    return float(np.sqrt(np.mean((np.asarray(y) - np.asarray(prediction)) ** 2)))


def mae(y: np.ndarray, prediction: np.ndarray) -> float:
    """Mean absolute error.

    Parameters
    ----------
    y : array-like
        Observed values.
    prediction : array-like
        Predictions, same shape as ``y``.

    Returns
    -------
    float
        ``mean(abs(y - prediction))``.

    Examples
    --------
    >>> import bayesfm as bfm
    >>> round(bfm.metrics.mae([3, 4, 5], [2.5, 4, 5.5]), 3)
    0.333
    """
    return float(np.mean(np.abs(np.asarray(y) - np.asarray(prediction))))


def auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann–Whitney statistic; ties count one half).

    Parameters
    ----------
    y : array-like
        0/1 (or boolean) labels.
    score : array-like
        Scores, higher meaning more likely a 1.

    Returns
    -------
    float
        The AUC, or NaN when ``y`` holds a single class.

    Examples
    --------
    >>> import bayesfm as bfm
    >>> bfm.metrics.auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    y = np.asarray(y).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def log_loss(y: np.ndarray, p: np.ndarray, eps: float = 1e-12) -> float:
    """Mean negative log-likelihood of 0/1 labels under probabilities ``p`` of a 1.

    Parameters
    ----------
    y : array-like
        0/1 labels.
    p : array-like
        Predicted probabilities of a 1.
    eps : float
        Probabilities are clipped to ``[eps, 1 - eps]``.

    Returns
    -------
    float
        The mean log loss (lower is better).

    Examples
    --------
    >>> import bayesfm as bfm
    >>> round(bfm.metrics.log_loss([0, 1], [0.2, 0.9]), 3)
    0.164
    """
    p = np.clip(np.asarray(p, np.float64), eps, 1 - eps)
    y = np.asarray(y)
    return float(-np.mean(np.where(y == 1, np.log(p), np.log1p(-p))))


def reliability_curve(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> pd.DataFrame:
    """Observed frequency of 1s against the mean predicted probability, in equal-width bins.

    Parameters
    ----------
    y : array-like
        0/1 labels.
    p : array-like
        Predicted probabilities of a 1.
    n_bins : int
        Number of equal-width bins over [0, 1]; empty bins are left out.

    Returns
    -------
    pandas.DataFrame
        Columns ``bin, predicted, observed, n``.

    Examples
    --------
    >>> import bayesfm as bfm
    >>> bfm.metrics.reliability_curve([0, 0, 1, 1], [0.1, 0.3, 0.6, 0.8], n_bins=2)
              bin  predicted  observed  n
    0  [0.0, 0.5)        0.2       0.0  2
    1  [0.5, 1.0)        0.7       1.0  2
    """
    p = np.asarray(p, np.float64)
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    frame = pd.DataFrame({"bin": bins, "p": p, "y": np.asarray(y, np.float64)})
    out = frame.groupby("bin").agg(predicted=("p", "mean"), observed=("y", "mean"), n=("y", "size"))
    out.index = [f"[{b / n_bins:.1f}, {(b + 1) / n_bins:.1f})" for b in out.index]
    return out.rename_axis("bin").reset_index()


def coverage_curve(
    y: np.ndarray, lower: np.ndarray, upper: np.ndarray, levels: tuple[float, ...]
) -> pd.DataFrame:
    """Empirical coverage and mean width of central intervals.

    Parameters
    ----------
    y : array-like
        Observed values, shape ``(n,)``.
    lower, upper : numpy.ndarray
        Interval ends, shape ``(len(levels), n)``.
    levels : tuple of float
        Nominal probability of each row of ``lower`` and ``upper``.

    Returns
    -------
    pandas.DataFrame
        Columns ``nominal, empirical, mean_width``, one row per level.

    Examples
    --------
    >>> import numpy as np
    >>> import bayesfm as bfm
    >>> lower = np.array([[0.5, 1.5, 3.2], [0.0, 1.0, 2.0]])
    >>> upper = np.array([[1.5, 2.5, 3.8], [2.0, 3.0, 4.0]])
    >>> bfm.metrics.coverage_curve([1.0, 2.0, 3.0], lower, upper, levels=(0.5, 0.9)).round(2)
       nominal  empirical  mean_width
    0      0.5       0.67        0.87
    1      0.9       1.00        2.00
    """
    y = np.asarray(y)[None]
    inside = (y >= lower) & (y <= upper)
    return pd.DataFrame(
        {
            "nominal": np.asarray(levels),
            "empirical": inside.mean(1),
            "mean_width": (upper - lower).mean(1),
        }
    )


# ------------------------------------------------------------------------ evaluation
@dataclass
class PredictiveCheck:
    """Held-out accuracy and calibration of a fitted model (see :func:`evaluate`).

    Parameters
    ----------
    summary : dict
        ``n, rmse, mae, mlpd`` and the 50%/90% coverage and mean width; for the binary task
        also ``auc, log_loss, accuracy``; for ordinal ``accuracy`` and ``log_loss``.
    coverage : pandas.DataFrame
        ``nominal, empirical, mean_width`` for central intervals at ``COVERAGE_LEVELS``.
    pit : numpy.ndarray
        Probability integral transform of every row (uniform when calibrated; randomized
        for discrete outcomes).
    by_activity : pandas.DataFrame
        ``n, rmse, coverage_90, width_90`` for rows split by their user's training activity
        tercile, and for cold-start rows (an id unseen in training).
    rows : pandas.DataFrame
        Per-row ``y, mean, lower_90, upper_90, lpd, pit, activity``.
    reliability : pandas.DataFrame or None
        Binary task: observed frequency against predicted probability.
    extra : dict
        Room for additional results; empty by default.

    Examples
    --------
    >>> import bayesfm as bfm
    >>> check = bfm.evaluate(model, X.tail(100), y[-100:])
    >>> check.summary["n"], check.pit.shape
    (100, (100,))
    >>> check.coverage.columns.tolist()
    ['nominal', 'empirical', 'mean_width']
    """

    summary: dict[str, Any]
    coverage: pd.DataFrame
    pit: np.ndarray
    by_activity: pd.DataFrame
    rows: pd.DataFrame
    reliability: pd.DataFrame | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _activity_groups(model: BayesianFM, X: pd.DataFrame) -> np.ndarray:
    """Label each row by its user's training activity tercile, or ``"cold start"``."""
    spec = model.encoder_.spec
    entities = [f for f in spec.fields if isinstance(f, Categorical) and f.owner is None]
    labels = np.full(len(X), "all", dtype=object)
    if not entities:
        return labels
    cold = np.zeros(len(X), bool)
    for f in entities:
        cold |= model.encoder_.index(f.dim, X[f.column].to_numpy()) < 0
    user = entities[0]
    const = model.idata_.constant_data
    counts = np.bincount(
        const[f"{user.dim}_index"].to_numpy(), minlength=len(model.encoder_.levels[user.dim])
    )
    lo, hi = np.quantile(counts, [1 / 3, 2 / 3])
    idx = model.encoder_.index(user.dim, X[user.column].to_numpy())
    c = counts[np.maximum(idx, 0)]
    labels = np.where(
        c <= lo,
        f"low activity (<= {lo:.0f})",
        np.where(c <= hi, f"mid activity ({lo:.0f}, {hi:.0f}]", f"high activity (> {hi:.0f})"),
    ).astype(object)
    labels[cold] = "cold start"
    return labels


def _activity_order(label: str) -> int:
    return next((i for i, p in enumerate(("low", "mid", "high", "all")) if label.startswith(p)), 4)


def evaluate(
    model: BayesianFM, X: pd.DataFrame, y: Any, levels: tuple[float, ...] = COVERAGE_LEVELS
) -> PredictiveCheck:
    """Accuracy and calibration of ``model`` on a held-out table ``X`` with targets ``y``.

    Memory is bounded: the posterior predictive is summarized chunk by chunk.

    Parameters
    ----------
    model : BayesianFM or BayesianMF
        A fitted estimator.
    X : pandas.DataFrame
        Held-out rows, with every column the feature spec reads.
    y : array-like
        Their observed targets.
    levels : tuple of float
        Nominal levels of the central intervals whose coverage is measured.

    Returns
    -------
    PredictiveCheck
        Summary numbers, coverage curve, PIT values, results by user activity and per row.

    Raises
    ------
    NotFittedError
        The model is not fitted.
    ValueError
        ``y`` does not match ``X``, a level is outside (0, 1), or ordinal labels were not
        seen in training.

    Examples
    --------
    >>> import bayesfm as bfm
    >>> check = bfm.evaluate(model, X.tail(100), y[-100:])
    >>> sorted(check.summary)
    ['coverage_50', 'coverage_90', 'mae', 'mlpd', 'n', 'rmse', 'width_50', 'width_90']
    >>> check.by_activity.columns.tolist()
    ['activity', 'n', 'rmse', 'coverage_90', 'width_90']
    """
    model._check_fitted()
    y = model._validated_target(y, len(X))
    levels = tuple(float(q) for q in levels)
    if not levels or any(not 0 < q < 1 for q in levels):
        raise ValueError(f"levels: got {levels!r}; every level must lie in (0, 1)")
    task = model.task
    if task == "ordinal":
        unseen = np.setdiff1d(np.unique(y), model.classes_)
        if len(unseen):
            raise ValueError(
                f"y: ordinal labels {unseen[:5].tolist()} were not seen in training; "
                f"allowed classes are {model.classes_.tolist()}"
            )
    n = len(X)
    qs = np.concatenate([(1 - np.asarray(levels)) / 2, (1 + np.asarray(levels)) / 2])
    bounds = np.empty((len(qs), n))
    mean, lpd, pit = np.empty(n), np.empty(n), np.empty(n)
    p1 = np.empty(n) if task == "binary" else None
    top = np.empty(n) if task == "ordinal" else None
    engine = model._engine()
    uniform = np.random.default_rng([model.random_state, 2]).random(n)
    for start, stop, eta, rng in model._chunks(X):
        rows = slice(start, stop)
        yy = y[rows]
        mean[rows] = model._expected(eta).mean(0)
        bounds[:, rows] = model._predictive_quantiles(eta, rng, qs)
        lp = model._log_density(eta, yy).astype(np.float64)
        lpd[rows] = logsumexp(lp, 0) - np.log(lp.shape[0])
        if task == "regression":
            pit[rows] = norm.cdf((yy[None] - eta) / engine.noise()[:, None]).mean(0)
        elif task == "binary":
            p = engine.success_prob(eta).mean(0)
            p1[rows] = p
            below, at = np.where(yy == 1, 1 - p, 0.0), np.where(yy == 1, p, 1 - p)
            pit[rows] = below + uniform[rows] * at
        else:
            probs = np.exp(engine.class_log_probs(eta)).mean(0)
            k = np.searchsorted(model.classes_, yy)
            cdf = np.cumsum(probs, -1)
            below = np.where(k > 0, cdf[np.arange(len(k)), np.maximum(k - 1, 0)], 0.0)
            pit[rows] = below + uniform[rows] * probs[np.arange(len(k)), k]
            top[rows] = model.classes_[probs.argmax(-1)]
    m = len(levels)
    lower, upper = bounds[:m], bounds[m:]
    coverage = coverage_curve(y, lower, upper, levels)
    summary: dict[str, Any] = {
        "n": n,
        "rmse": rmse(y, mean),
        "mae": mae(y, mean),
        "mlpd": float(lpd.mean()),
    }
    i90 = int(np.argmin(np.abs(np.asarray(levels) - 0.9)))
    for q in (0.5, 0.9):
        j = int(np.argmin(np.abs(np.asarray(levels) - q)))
        if abs(levels[j] - q) < 1e-9:
            summary[f"coverage_{int(q * 100)}"] = float(coverage.empirical[j])
            summary[f"width_{int(q * 100)}"] = float(coverage.mean_width[j])
    reliability = None
    if task == "binary":
        summary.update(
            auc=auc(y, p1), log_loss=log_loss(y, p1), accuracy=float(np.mean((p1 > 0.5) == y))
        )
        reliability = reliability_curve(y, p1)
    elif task == "ordinal":
        summary.update(accuracy=float(np.mean(top == y)), log_loss=float(-lpd.mean()))
    activity = _activity_groups(model, X)
    inside90 = (y >= lower[i90]) & (y <= upper[i90])
    rows_df = pd.DataFrame(
        {
            "y": y,
            "mean": mean,
            "lower_90": lower[i90],
            "upper_90": upper[i90],
            "inside_90": inside90,
            "lpd": lpd,
            "pit": pit,
            "activity": activity,
        },
        index=X.index,
    )
    by_activity = (
        rows_df.assign(sq=(rows_df.y - rows_df["mean"]) ** 2, width=upper[i90] - lower[i90])
        .groupby("activity", sort=False)
        .agg(
            n=("y", "size"),
            rmse=("sq", "mean"),
            coverage_90=("inside_90", "mean"),
            width_90=("width", "mean"),
        )
        .assign(rmse=lambda d: np.sqrt(d.rmse))
    )
    order = sorted(by_activity.index, key=_activity_order)
    by_activity = by_activity.loc[order].reset_index()
    return PredictiveCheck(summary, coverage, pit, by_activity, rows_df, reliability)


# ------------------------------------------------------------------------------ LOO
def _idata_of(model_or_idata: Any) -> Any:
    idata = getattr(model_or_idata, "idata_", model_or_idata)
    if not isinstance(idata, idata_mod.InferenceData):
        raise TypeError(
            f"got {type(model_or_idata).__name__}; expected a fitted bayesfm estimator or an "
            "arviz.InferenceData"
        )
    if "log_likelihood" not in idata.groups():
        raise ValueError(
            "the fit has no pointwise log_likelihood group; refit with store_pointwise=True for LOO"
        )
    return idata


def loo(model: Any) -> dict[str, Any]:
    """PSIS-LOO of a fit: ``elpd_loo``, its standard error, ``p_loo`` and Pareto-k counts.

    Parameters
    ----------
    model : BayesianFM, BayesianMF or arviz.InferenceData
        A fit with the pointwise ``log_likelihood`` group (``store_pointwise=True``).

    Returns
    -------
    dict
        ``elpd_loo``, ``se``, ``p_loo``, ``n``, ``pareto_k`` (a DataFrame of counts per k
        range: good <= 0.5, ok <= 0.7, bad <= 1, very bad > 1), and ``elpd_data`` (ArviZ's
        ELPDData).

    Raises
    ------
    TypeError
        ``model`` is neither a fitted estimator nor an InferenceData.
    ValueError
        The fit has no ``log_likelihood`` group.

    Examples
    --------
    >>> import bayesfm as bfm
    >>> result = bfm.loo(model)
    >>> sorted(result)
    ['elpd_data', 'elpd_loo', 'n', 'p_loo', 'pareto_k', 'se']
    >>> result["pareto_k"]["label"].tolist()
    ['good', 'ok', 'bad', 'very bad']
    """
    result = idata_mod.loo(_idata_of(model))
    k = np.asarray(result.pareto_k).ravel()
    counts = pd.DataFrame(
        [
            {"range": f"({lo}, {hi}]", "label": label, "count": int(((k > lo) & (k <= hi)).sum())}
            for lo, hi, label in PARETO_K_BINS
        ]
    )
    counts["share"] = counts["count"] / max(len(k), 1)
    return {
        "elpd_loo": float(result.elpd_loo),
        "se": float(result.se),
        "p_loo": float(result.p_loo),
        "n": int(len(k)),
        "pareto_k": counts,
        "elpd_data": result,
    }


def compare(models: dict[str, Any]) -> pd.DataFrame:
    """Rank fits by PSIS-LOO expected log predictive density (wraps ``arviz.compare``).

    Parameters
    ----------
    models : dict
        Names to fitted estimators (or InferenceData), all fitted on the same rows.

    Returns
    -------
    pandas.DataFrame
        ``arviz.compare``'s table, one row per fit, best first (``elpd_loo``, ``p_loo``,
        ``elpd_diff``, ``weight``, ``se``, ``dse``, ...).

    Raises
    ------
    ValueError
        Fewer than two fits, fits on different numbers of rows, or a fit without the
        pointwise ``log_likelihood`` group.

    Examples
    --------
    Matrix factorization against an FM with item genres, on the same rows:

    >>> import bayesfm as bfm
    >>> data = bfm.datasets.make_synthetic(n_users=20, n_items=15, n_obs=300, seed=0)
    >>> svi = bfm.SVIConfig(num_steps=200, num_samples=50)
    >>> spec = bfm.FeatureSpec([bfm.Categorical("user_id"), bfm.Categorical("item_id"),
    ...                         bfm.MultiHot("genres", owner="item_id")])
    >>> fm = bfm.BayesianFM(rank=2, features=spec, inference=svi, progress_bar=False)
    >>> mf = bfm.BayesianMF(rank=2, inference=svi, progress_bar=False)
    >>> table = bfm.compare({"fm": fm.fit(data.X, data.y), "mf": mf.fit(data.X, data.y)})
    >>> sorted(table.index)
    ['fm', 'mf']
    >>> "elpd_diff" in table.columns
    True
    """
    if not isinstance(models, dict) or len(models) < 2:
        raise ValueError(
            f"models: got {type(models).__name__} of size "
            f"{len(models) if hasattr(models, '__len__') else '?'}; "
            "pass a dict of at least two named fits"
        )
    idatas = {name: _idata_of(m) for name, m in models.items()}
    sizes = {name: i.log_likelihood.sizes["obs"] for name, i in idatas.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(
            f"models: fits have different numbers of observations {sizes}; LOO "
            "comparison needs fits on the same training rows"
        )
    return idata_mod.compare(idatas)


# ------------------------------------------------------------------------- ranking
def _ids(values: Any) -> np.ndarray:
    return np.asarray(pd.Series(values, dtype=object).to_numpy(), dtype=object)


def _pair_keys(users: Any, items: Any) -> pd.MultiIndex:
    return pd.MultiIndex.from_arrays([_ids(users), _ids(items)])


def _relevant(test: pd.DataFrame, threshold: float, user: str, item: str, rating: str):
    """Relevant (user, item) pairs of a test table and the number per user."""
    for col in (user, item, rating):
        if col not in test.columns:
            raise ValueError(
                f"test: missing column {col!r}; the table has {list(test.columns)} (set "
                "user=, item=, rating= to name the columns)"
            )
    rel = test[pd.to_numeric(test[rating], errors="coerce") >= threshold]
    rel = rel.drop_duplicates(subset=[user, item])
    counts = rel.groupby(user, sort=False).size()
    return _pair_keys(rel[user], rel[item]), counts


def _discount(k: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, k + 2))


def _ranked_hits(
    recommendations: pd.DataFrame, test: pd.DataFrame, k: int, threshold: float, user, item, rating
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(hits[users, k], n_relevant[users], users)`` for users with a relevant test item."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k: got {k!r}; must be an integer >= 1")
    for col in (user, item):
        if col not in recommendations.columns:
            raise ValueError(
                f"recommendations: missing column {col!r}; the table has "
                f"{list(recommendations.columns)}"
            )
    pairs, counts = _relevant(test, threshold, user, item, rating)
    recs = recommendations
    if "rank" in recs.columns:
        recs = recs.sort_values([user, "rank"], kind="stable")
    position = recs.groupby(user, sort=False).cumcount().to_numpy()
    recs = recs[position < k]
    position = position[position < k]
    users = pd.unique(_ids(recs[user]))
    users = users[pd.Index(counts.index).get_indexer(users) >= 0]
    row = pd.Index(users).get_indexer(_ids(recs[user]))
    keep = row >= 0
    hit = _pair_keys(recs[user], recs[item]).isin(pairs)
    hits = np.zeros((len(users), k), bool)
    hits[row[keep], position[keep]] = hit[keep]
    return hits, counts.reindex(users).to_numpy(np.float64), users


def _ranking_from_hits(hits: np.ndarray, n_relevant: np.ndarray) -> dict[str, np.ndarray]:
    """Per-user precision, recall, NDCG and average precision at ``k = hits.shape[-1]``."""
    k = hits.shape[-1]
    h = hits.astype(np.float64)
    disc = _discount(k)
    ideal_len = np.minimum(n_relevant, k).astype(int)
    idcg = np.concatenate([[0.0], np.cumsum(disc)])[ideal_len]
    precision_at = np.cumsum(h, -1) / np.arange(1, k + 1)
    return {
        "precision": h.sum(-1) / k,
        "recall": h.sum(-1) / n_relevant,
        "ndcg": (h * disc).sum(-1) / idcg,
        "map": (precision_at * h).sum(-1) / np.minimum(n_relevant, k),
    }


def ranking_metrics(
    recommendations: pd.DataFrame,
    test: pd.DataFrame,
    k: int = 10,
    threshold: float = 4.0,
    *,
    catalogue: Any = None,
    user: str = "user_id",
    item: str = "item_id",
    rating: str = "rating",
) -> dict[str, float]:
    """Precision@k, recall@k, NDCG@k and MAP@k of top-k lists against a test table.

    An item is relevant to a user when the test table holds their pair with
    ``rating >= threshold``; recommended items absent from the test table count as not
    relevant. Lists are ordered by their ``rank`` column (or their row order), and only the
    first ``k`` rows per user count. Metrics are averaged over the users that have a list
    and at least one relevant test item. Relevance is binary, so NDCG's gain is 1 per hit.

    Parameters
    ----------
    recommendations : pandas.DataFrame
        Columns ``user``, ``item`` and optionally ``rank`` (e.g. from
        :meth:`bayesfm.BayesianFM.recommend`).
    test : pandas.DataFrame
        Columns ``user``, ``item`` and ``rating``.
    k : int
        Length of the lists that count.
    threshold : float
        Smallest rating that makes a test item relevant.
    catalogue : sequence of item ids or int, optional
        The catalogue (or its size) for ``coverage``: the share of it that appears in some
        user's top-k list.
    user, item, rating : str
        Column names of the user ids, item ids and ratings.

    Returns
    -------
    dict
        ``precision, recall, ndcg, map, n_users`` and ``coverage`` when a catalogue is given.

    Raises
    ------
    ValueError
        ``k`` < 1, a column is missing, or an empty catalogue.

    Examples
    --------
    User ``u1`` liked ``i2`` and user ``u2`` liked ``i3``; each finds it second in a list of
    two:

    >>> import pandas as pd
    >>> import bayesfm as bfm
    >>> recs = pd.DataFrame({"user_id": ["u1", "u1", "u2", "u2"],
    ...                      "item_id": ["i1", "i2", "i1", "i3"], "rank": [1, 2, 1, 2]})
    >>> test = pd.DataFrame({"user_id": ["u1", "u2", "u2"], "item_id": ["i2", "i3", "i4"],
    ...                      "rating": [5, 4, 2]})
    >>> scores = bfm.metrics.ranking_metrics(recs, test, k=2, threshold=4,
    ...                                      catalogue=["i1", "i2", "i3", "i4"])
    >>> {name: round(value, 3) for name, value in scores.items()}
    {'precision': 0.5, 'recall': 1.0, 'ndcg': 0.631, 'map': 0.5, 'n_users': 2, 'coverage': 0.75}
    """
    hits, n_rel, users = _ranked_hits(recommendations, test, k, threshold, user, item, rating)
    per_user = _ranking_from_hits(hits, n_rel)
    out = {name: float(v.mean()) if len(users) else float("nan") for name, v in per_user.items()}
    out["n_users"] = len(users)
    if catalogue is not None:
        out["coverage"] = coverage_at_k(recommendations, catalogue, k, user=user, item=item)
    return out


def precision_at_k(recommendations: pd.DataFrame, test: pd.DataFrame, k: int = 10, **kw) -> float:
    """Share of the top-k items that are relevant, averaged over users.

    See :func:`ranking_metrics` for the conventions.

    Parameters
    ----------
    recommendations : pandas.DataFrame
        Columns ``user``, ``item`` and optionally ``rank`` (e.g. from
        :meth:`bayesfm.BayesianFM.recommend`).
    test : pandas.DataFrame
        Columns ``user``, ``item`` and ``rating``.
    k : int
        Length of the lists that count.
    **kw
        ``threshold``, ``user``, ``item``, ``rating`` as in :func:`ranking_metrics`.

    Returns
    -------
    float
        The metric averaged over users with a list and a relevant test item.

    Raises
    ------
    ValueError
        ``k`` < 1 or a column is missing.

    Examples
    --------
    >>> import pandas as pd
    >>> import bayesfm as bfm
    >>> recs = pd.DataFrame({"user_id": ["u1", "u1", "u2", "u2"],
    ...                      "item_id": ["i1", "i2", "i1", "i3"], "rank": [1, 2, 1, 2]})
    >>> test = pd.DataFrame({"user_id": ["u1", "u2", "u2"], "item_id": ["i2", "i3", "i4"],
    ...                      "rating": [5, 4, 2]})
    >>> round(bfm.metrics.precision_at_k(recs, test, k=2, threshold=4), 3)
    0.5
    """
    return ranking_metrics(recommendations, test, k, **kw)["precision"]


def recall_at_k(recommendations: pd.DataFrame, test: pd.DataFrame, k: int = 10, **kw) -> float:
    """Share of a user's relevant test items found in the top k; see :func:`ranking_metrics`.

    Parameters
    ----------
    recommendations : pandas.DataFrame
        Columns ``user``, ``item`` and optionally ``rank`` (e.g. from
        :meth:`bayesfm.BayesianFM.recommend`).
    test : pandas.DataFrame
        Columns ``user``, ``item`` and ``rating``.
    k : int
        Length of the lists that count.
    **kw
        ``threshold``, ``user``, ``item``, ``rating`` as in :func:`ranking_metrics`.

    Returns
    -------
    float
        The metric averaged over users with a list and a relevant test item.

    Raises
    ------
    ValueError
        ``k`` < 1 or a column is missing.

    Examples
    --------
    >>> import pandas as pd
    >>> import bayesfm as bfm
    >>> recs = pd.DataFrame({"user_id": ["u1", "u1", "u2", "u2"],
    ...                      "item_id": ["i1", "i2", "i1", "i3"], "rank": [1, 2, 1, 2]})
    >>> test = pd.DataFrame({"user_id": ["u1", "u2", "u2"], "item_id": ["i2", "i3", "i4"],
    ...                      "rating": [5, 4, 2]})
    >>> round(bfm.metrics.recall_at_k(recs, test, k=2, threshold=4), 3)
    1.0
    """
    return ranking_metrics(recommendations, test, k, **kw)["recall"]


def ndcg_at_k(recommendations: pd.DataFrame, test: pd.DataFrame, k: int = 10, **kw) -> float:
    """Normalized discounted cumulative gain at k; see :func:`ranking_metrics`.

    Parameters
    ----------
    recommendations : pandas.DataFrame
        Columns ``user``, ``item`` and optionally ``rank`` (e.g. from
        :meth:`bayesfm.BayesianFM.recommend`).
    test : pandas.DataFrame
        Columns ``user``, ``item`` and ``rating``.
    k : int
        Length of the lists that count.
    **kw
        ``threshold``, ``user``, ``item``, ``rating`` as in :func:`ranking_metrics`.

    Returns
    -------
    float
        The metric averaged over users with a list and a relevant test item.

    Raises
    ------
    ValueError
        ``k`` < 1 or a column is missing.

    Examples
    --------
    >>> import pandas as pd
    >>> import bayesfm as bfm
    >>> recs = pd.DataFrame({"user_id": ["u1", "u1", "u2", "u2"],
    ...                      "item_id": ["i1", "i2", "i1", "i3"], "rank": [1, 2, 1, 2]})
    >>> test = pd.DataFrame({"user_id": ["u1", "u2", "u2"], "item_id": ["i2", "i3", "i4"],
    ...                      "rating": [5, 4, 2]})
    >>> round(bfm.metrics.ndcg_at_k(recs, test, k=2, threshold=4), 3)
    0.631
    """
    return ranking_metrics(recommendations, test, k, **kw)["ndcg"]


def map_at_k(recommendations: pd.DataFrame, test: pd.DataFrame, k: int = 10, **kw) -> float:
    """Mean average precision at k (normalized by ``min(k, relevant)``).

    See :func:`ranking_metrics` for the conventions.

    Parameters
    ----------
    recommendations : pandas.DataFrame
        Columns ``user``, ``item`` and optionally ``rank`` (e.g. from
        :meth:`bayesfm.BayesianFM.recommend`).
    test : pandas.DataFrame
        Columns ``user``, ``item`` and ``rating``.
    k : int
        Length of the lists that count.
    **kw
        ``threshold``, ``user``, ``item``, ``rating`` as in :func:`ranking_metrics`.

    Returns
    -------
    float
        The metric averaged over users with a list and a relevant test item.

    Raises
    ------
    ValueError
        ``k`` < 1 or a column is missing.

    Examples
    --------
    >>> import pandas as pd
    >>> import bayesfm as bfm
    >>> recs = pd.DataFrame({"user_id": ["u1", "u1", "u2", "u2"],
    ...                      "item_id": ["i1", "i2", "i1", "i3"], "rank": [1, 2, 1, 2]})
    >>> test = pd.DataFrame({"user_id": ["u1", "u2", "u2"], "item_id": ["i2", "i3", "i4"],
    ...                      "rating": [5, 4, 2]})
    >>> round(bfm.metrics.map_at_k(recs, test, k=2, threshold=4), 3)
    0.5
    """
    return ranking_metrics(recommendations, test, k, **kw)["map"]


def coverage_at_k(
    recommendations: pd.DataFrame,
    catalogue: Any,
    k: int = 10,
    *,
    user: str = "user_id",
    item: str = "item_id",
) -> float:
    """Share of the catalogue recommended to at least one user in a top-k list.

    Parameters
    ----------
    recommendations : pandas.DataFrame
        Columns ``user``, ``item`` and optionally ``rank``.
    catalogue : sequence of item ids or int
        The catalogue, or its size. Recommended items outside a given catalogue do not
        count.
    k : int
        Length of the lists that count.
    user, item : str
        Column names of the user and item ids.

    Returns
    -------
    float
        Share of the catalogue shown to someone, in [0, 1].

    Raises
    ------
    ValueError
        The catalogue is empty.

    Examples
    --------
    >>> import pandas as pd
    >>> import bayesfm as bfm
    >>> recs = pd.DataFrame({"user_id": ["u1", "u1", "u2", "u2"],
    ...                      "item_id": ["i1", "i2", "i1", "i3"], "rank": [1, 2, 1, 2]})
    >>> bfm.metrics.coverage_at_k(recs, ["i1", "i2", "i3", "i4"], k=2)
    0.75
    >>> bfm.metrics.coverage_at_k(recs, 10, k=1)
    0.1
    """
    if isinstance(catalogue, int | np.integer) and not isinstance(catalogue, bool):
        size = int(catalogue)
        allowed = None
    else:
        allowed = pd.unique(_ids(list(catalogue)))
        size = len(allowed)
    if size < 1:
        raise ValueError(f"catalogue: got {catalogue!r}; it must hold at least one item")
    recs = recommendations
    if "rank" in recs.columns:
        recs = recs.sort_values([user, "rank"], kind="stable")
    recs = recs[recs.groupby(user, sort=False).cumcount().to_numpy() < k]
    shown = pd.unique(_ids(recs[item]))
    if allowed is not None:
        shown = shown[pd.Index(allowed).get_indexer(shown) >= 0]
    return len(shown) / size


def expected_ndcg(
    model: BayesianFM,
    test: pd.DataFrame,
    k: int = 10,
    threshold: float = 4.0,
    *,
    n_draws: int = 100,
    users: Any = None,
    candidates: Any = None,
    exclude_seen: bool = True,
    prob: float = 0.9,
    seed: int = 0,
    user: str | None = None,
    item: str | None = None,
    rating: str = "rating",
) -> dict[str, Any]:
    """The posterior distribution of NDCG@k: how much of the metric the posterior is sure of.

    Each of ``n_draws`` posterior draws ranks every candidate for every user by
    ``E[y | theta_draw]`` (the list Thompson sampling would show under that draw); each
    draw's lists are scored by NDCG@k against ``test`` as in :func:`ranking_metrics`. The
    mean over draws is the expected NDCG under the posterior, and its spread is the
    uncertainty of the metric that the posterior itself carries. Compare it with the NDCG of
    the posterior-mean ranking (``recommend(strategy="mean")``).

    Parameters
    ----------
    model : BayesianFM or BayesianMF
        A fitted estimator.
    test : pandas.DataFrame
        Columns of the user ids, item ids and ratings.
    k : int
        Length of the lists.
    threshold : float
        Smallest rating that makes a test item relevant.
    n_draws : int
        Posterior draws used (evenly spaced over all chains and draws).
    users : sequence of ids, optional
        Default: the test users with at least one relevant item.
    candidates : sequence of item ids, optional
        The items ranked; default every item seen in training.
    exclude_seen : bool
        Drop the (user, item) pairs rated in training from the lists.
    prob : float
        Probability mass of the reported central interval.
    seed : int
        Seed of the systematic sample of draws: when ``n_draws`` is less than the number of
        posterior draws, every ``total / n_draws``-th draw is used from a random start, so the
        sample stays spread over all chains and iterations.
    user, item : str, optional
        Columns of the user and item ids; default as in :meth:`BayesianFM.recommend`.
    rating : str
        Column of the ratings in ``test``.

    Returns
    -------
    dict
        ``mean, sd, lower, upper`` (central ``prob`` interval), ``n_users``, ``n_draws`` and
        ``values`` (NDCG@k of each draw).

    Raises
    ------
    ValueError
        ``n_draws``, ``prob`` or ``k`` out of range, or no test user has a relevant item.
    NotFittedError
        The model is not fitted.

    Examples
    --------
    >>> import bayesfm as bfm
    >>> test = X.assign(rating=y).tail(200)
    >>> result = bfm.metrics.expected_ndcg(model, test, k=5, threshold=4, n_draws=20,
    ...                                    exclude_seen=False)
    >>> result["n_draws"], result["values"].shape
    (20, (20,))
    >>> bool(result["lower"] <= result["mean"] <= result["upper"])
    True
    """
    if isinstance(n_draws, bool) or not isinstance(n_draws, int | np.integer) or n_draws < 1:
        raise ValueError(f"n_draws: got {n_draws!r}; must be an integer >= 1")
    if not 0 < prob < 1:
        raise ValueError(f"prob: got {prob!r}; must be a number in (0, 1)")
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k: got {k!r}; must be an integer >= 1")
    model._check_fitted()
    uf, itf = entity_roles(model, user, item)
    pairs, counts = _relevant(test, threshold, uf.column, itf.column, rating)
    if users is None:
        users = counts.index.tolist()
    scorer = PairScorer.from_model(model, users, candidates, None, uf.column, itf.column)
    n_rel = counts.reindex(scorer.user_ids).fillna(0).to_numpy(np.float64)
    total = scorer.n_draws
    if n_draws >= total:
        draws = np.arange(total)
    else:  # systematic sampling: evenly spaced, from a seeded random start
        step = total / n_draws
        start = np.random.default_rng(seed).uniform(0.0, step)
        draws = np.minimum((start + step * np.arange(n_draws)).astype(int), total - 1)
    evaluated = np.flatnonzero(n_rel > 0)
    if len(evaluated) == 0:
        raise ValueError(
            f"test: no user has an item with {rating} >= {threshold}; NDCG is undefined"
        )
    s = len(draws)
    kept_score = np.full((s, len(evaluated), k), -np.inf)
    kept_pos = np.full((s, len(evaluated), k), np.iinfo(np.int64).max, np.int64)
    user_block, item_block = scorer.blocks(s, len(evaluated))
    for rows, pos, u_idx, i_idx in scorer.iter_blocks(evaluated, user_block, item_block):
        rows = np.searchsorted(evaluated, rows)  # positions among the evaluated users
        score = scorer.expected(scorer.grid(u_idx, i_idx, draws), draws)
        score = np.asarray(score, np.float64)[:, : len(rows), : len(pos)]
        if exclude_seen:
            score[:, scorer.seen_mask(u_idx[: len(rows)], i_idx[: len(pos)])] = -np.inf
        ks, kp = top_n(
            kept_score[:, rows].reshape(-1, k),
            kept_pos[:, rows].reshape(-1, k),
            score.reshape(-1, len(pos)),
            pos,
            k,
        )
        kept_score[:, rows], kept_pos[:, rows] = ks.reshape(s, -1, k), kp.reshape(s, -1, k)
    shown = np.isfinite(kept_score)
    item_ids = scorer.item_ids[np.where(shown, kept_pos, 0)]
    user_ids = np.broadcast_to(scorer.user_ids[evaluated][None, :, None], item_ids.shape)
    hits = _pair_keys(user_ids.ravel(), item_ids.ravel()).isin(pairs).reshape(shown.shape)
    values = _ranking_from_hits(hits & shown, n_rel[evaluated][None, :])["ndcg"].mean(-1)
    lower, upper = np.quantile(values, [(1 - prob) / 2, (1 + prob) / 2])
    return {
        "mean": float(values.mean()),
        "sd": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
        "lower": float(lower),
        "upper": float(upper),
        "n_users": len(evaluated),
        "n_draws": s,
        "values": values,
    }
