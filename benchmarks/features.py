"""The MovieLens-100K feature sets of the benchmarks: bayesfm fields and the same features as
myFM designs.

- ``mf``: user + item;
- ``fm``: + age, gender, occupation (per user), genres and release year (per item);
- ``fm_implicit``: ``fm`` + the implicit sets (the items each user rated, the users who rated
  each item), Gaussian;
- ``fm_full``: ``fm`` + the day of the rating + the implicit sets, with the ordered probit.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

FEATURES = {
    "mf": "user + item",
    "fm": "+ age, gender, occupation (per user), genres and release year (per item)",
    "fm_implicit": "fm + implicit sets (items each user rated, users who rated each item)",
    "fm_full": "fm + day of the rating + implicit sets (items each user rated, users who "
    "rated each item), ordered probit",
}


def prepare(train: pd.DataFrame, test: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Add the derived columns: ``year`` without gaps (the training median where the release
    date is missing) and ``day`` (the date of the rating, a categorical level)."""
    fill = float(train["year"].median())

    def add(df: pd.DataFrame) -> pd.DataFrame:
        day = pd.to_datetime(df["timestamp"], unit="s").dt.strftime("%Y-%m-%d")
        return df.assign(year=df["year"].fillna(fill), day=day)

    return add(train), add(test)


def bayesfm_fields(bfm, features: str, year: bool = True) -> list:
    """The fields of ``features`` (``"fm"``, ``"fm_implicit"`` or ``"fm_full"``) as a bayesfm
    feature list.

    ``year=False`` leaves out the release year, as the Gibbs and recommendation studies
    (measured before the year joined the ``fm`` set) do.
    """
    fields = [
        bfm.Categorical("user_id"),
        bfm.Categorical("item_id"),
        bfm.Numeric("age", owner="user_id"),
        bfm.Categorical("gender", owner="user_id"),
        bfm.Categorical("occupation", owner="user_id"),
        bfm.MultiHot("genres", owner="item_id"),
    ]
    if year:
        fields.append(bfm.Numeric("year", owner="item_id"))
    if features == "fm_full":
        fields.append(bfm.Categorical("day"))
    if features in ("fm_implicit", "fm_full"):
        fields += [
            bfm.Implicit(owner="user_id", members="item_id"),
            bfm.Implicit(owner="item_id", members="user_id"),
        ]
    return fields


def _onehot(train: pd.DataFrame, frames: list[pd.DataFrame], col: str):
    """One-hot columns of ``col`` with the training levels (unknown levels: an empty row)."""
    import scipy.sparse as sps

    levels = {v: i for i, v in enumerate(pd.unique(train[col]))}
    out = []
    for df in frames:
        idx = df[col].map(levels).fillna(-1).to_numpy(int)
        rows = np.flatnonzero(idx >= 0)
        out.append(
            sps.csr_matrix((np.ones(len(rows)), (rows, idx[rows])), shape=(len(df), len(levels)))
        )
    return out, len(levels)


def _standardized(train: pd.DataFrame, frames: list[pd.DataFrame], col: str):
    import scipy.sparse as sps

    mu, sd = train[col].mean(), train[col].std()
    return [sps.csr_matrix(((df[col].to_numpy(float) - mu) / sd)[:, None]) for df in frames], 1


def _genres(train: pd.DataFrame, frames: list[pd.DataFrame]):
    """Genres weighted 1/n, as bayesfm's ``MultiHot``."""
    import scipy.sparse as sps

    index = {g: i for i, g in enumerate(sorted({g for gs in train.genres for g in gs}))}
    out = []
    for df in frames:
        rows, cols, vals = [], [], []
        for r, gs in enumerate(df.genres):
            known = [g for g in gs if g in index]  # may be empty: genres unseen in training
            rows += [r] * len(known)
            cols += [index[g] for g in known]
            vals += [1.0 / max(len(known), 1)] * len(known)
        out.append(sps.csr_matrix((vals, (rows, cols)), shape=(len(df), len(index))))
    return out, len(index)


def _implicit(train: pd.DataFrame, frames: list[pd.DataFrame], owner: str, members: str):
    """Per row, the training ``members`` of the row's ``owner`` weighted 1/sqrt(n), as
    bayesfm's ``Implicit``."""
    import scipy.sparse as sps

    member_index = {v: i for i, v in enumerate(pd.unique(train[members]))}
    sets = train.groupby(owner)[members].agg(lambda s: [member_index[v] for v in s])
    out = []
    for df in frames:
        rows, cols, vals = [], [], []
        for r, key in enumerate(df[owner]):
            got = sets.get(key, [])
            rows += [r] * len(got)
            cols += got
            vals += [1.0 / np.sqrt(max(len(got), 1))] * len(got)
        out.append(sps.csr_matrix((vals, (rows, cols)), shape=(len(df), len(member_index))))
    return out, len(member_index)


def myfm_design(train: pd.DataFrame, test: pd.DataFrame, features: str, year: bool = True):
    """The features of ``features`` for myFM: ``(x_train, x_test, rel_train, rel_test,
    group_shapes)``.

    ``mf`` and ``fm`` are plain sparse designs (one-hot ids, gender and occupation,
    standardized age and year, genres weighted 1/n). ``fm_implicit`` and ``fm_full`` use
    myFM's relation blocks (Rendle 2013), one per user and one per item, holding the entity's
    attributes and its implicit set; only the day of the rating (``fm_full``) stays in the row
    design, which ``fm_implicit`` leaves empty. A flat design would repeat every implicit set
    on each of the entity's rows.
    """
    import myfm
    import scipy.sparse as sps

    frames = [train, test]
    if features in ("mf", "fm"):
        cols = ["user_id", "item_id"] + (["gender", "occupation"] if features == "fm" else [])
        blocks = [_onehot(train, frames, c) for c in cols]
        if features == "fm":
            blocks += [_standardized(train, frames, "age"), _genres(train, frames)]
            if year:
                blocks.append(_standardized(train, frames, "year"))
        x = [sps.hstack([b[0][i] for b in blocks]).tocsr() for i in range(2)]
        return x[0], x[1], [], [], [b[1] for b in blocks]

    if features == "fm_full":
        row_design, n_day = _onehot(train, frames, "day")
        shapes = [n_day]
    else:
        row_design, shapes = [sps.csr_matrix((len(df), 0)) for df in frames], []
    rel = ([], [])
    entity_blocks = {
        "user_id": lambda ents: [
            _onehot(train, ents, "user_id"),
            _onehot(train, ents, "gender"),
            _onehot(train, ents, "occupation"),
            _standardized(train, ents, "age"),
            _implicit(train, ents, "user_id", "item_id"),
        ],
        "item_id": lambda ents: [
            _onehot(train, ents, "item_id"),
            _genres(train, ents),
            _standardized(train, ents, "year"),
            _implicit(train, ents, "item_id", "user_id"),
        ],
    }
    for key, make in entity_blocks.items():
        uniques = [df.drop_duplicates(key).reset_index(drop=True) for df in frames]
        blocks = make(uniques)
        shapes += [b[1] for b in blocks]
        for i, (df, ents) in enumerate(zip(frames, uniques, strict=True)):
            where = pd.Index(ents[key]).get_indexer(df[key])
            data = sps.hstack([b[0][i] for b in blocks]).tocsr()
            rel[i].append(myfm.RelationBlock(where.astype(np.int64), data))
    return row_design[0], row_design[1], rel[0], rel[1], shapes
