"""Recommendations that use the posterior: top-n items per user under four strategies.

When every feature belongs to the user or to the item (ids, demographics, genres, implicit
sets), the FM mean of a pair splits, for each posterior draw, into

    f(u, i) = w0 + c_u + c_i + <s_u, s_i>,    c_e = lin_e + (|s_e|^2 - q_e) / 2

with the per-entity sums of :func:`bayesfm.fm.entity_components`. A block of users x
candidates is then one batched matrix product per draw, and every pair is scored without a
Python loop. Users and candidates are processed in blocks whose size is set by the number of
draws, so memory is bounded whatever the number of pairs. Unseen users and items get slots
drawn from their group's prior (the model's cold-start policy), with one key per posterior
draw so that a draw is the same joint sample in every block.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax.scipy.special import ndtr

from .data import Categorical, Encoded, Field, Implicit, _bucket
from .fm import ModelSpec, entity_components, ordered_probit_log_probs
from .predict import extend_tables

if TYPE_CHECKING:  # pragma: no cover
    from .estimators import BayesianFM

__all__ = ["INTERVALS", "STRATEGIES", "PairScorer", "entity_roles", "recommend", "top_n"]

STRATEGIES = ("mean", "prob", "ucb", "thompson")
INTERVALS = ("latent", "predictive")
# floats in one block of draws x users x candidates (64 MiB of float32)
BLOCK_FLOATS = 1 << 24
# per-draw entity tables are kept (not recomputed per block) up to this many floats
TABLE_FLOATS = 1 << 25


# ----------------------------------------------------------------------- jitted kernels
def _entity_scores(p, key, terms, *, spec: ModelSpec, n_extra: tuple, dims: tuple[str, str]):
    """``(c_user, s_user, c_item, s_item)`` of one draw; ``c_user`` includes ``w0``."""
    p = extend_tables(p, spec, dict(n_extra), key)
    ent = entity_components(p, terms, spec.structure)
    out = []
    for d in dims:
        lin, s, q = ent[d]
        out += [lin + 0.5 * (jnp.sum(s * s, -1) - q), s]
    out[0] = out[0] + p["w0"]
    return out


@partial(jax.jit, static_argnames=("spec", "n_extra", "dims"))
def _grid_latent(params, keys, terms, users, items, offset, *, spec, n_extra, dims):
    """Latent means of every (user, item) pair for a batch of draws: ``(draws, users, items)``."""

    def one(p, k):
        cu, su, ci, si = _entity_scores(p, k, terms, spec=spec, n_extra=n_extra, dims=dims)
        return offset + cu[users][:, None] + ci[items][None, :] + su[users] @ si[items].T

    return jax.vmap(one)(params, keys)


@partial(jax.jit, static_argnames=("spec", "n_extra", "dims"))
def _entity_tables(params, keys, terms, offset, *, spec, n_extra, dims):
    """Per-draw ``(c_user + offset, s_user, c_item, s_item)`` over every table level."""

    def one(p, k):
        cu, su, ci, si = _entity_scores(p, k, terms, spec=spec, n_extra=n_extra, dims=dims)
        return cu + offset, su, ci, si

    return jax.vmap(one)(params, keys)


@jax.jit
def _grid_from_tables(cu, su, ci, si, users, items):
    """The grid of :func:`_grid_latent` from kept entity tables: ``(draws, users, items)``."""
    inner = jnp.einsum("duk,dik->dui", su[:, users], si[:, items])
    return cu[:, users, None] + ci[:, None, items] + inner


@partial(jax.jit, static_argnames=("spec", "n_extra", "dims"))
def _pairs_latent(params, keys, terms, users, items, offset, *, spec, n_extra, dims):
    """Latent means of the pairs ``(users[j], items[j])`` for a batch of draws: ``(draws, m)``."""

    def one(p, k):
        cu, su, ci, si = _entity_scores(p, k, terms, spec=spec, n_extra=n_extra, dims=dims)
        return offset + cu[users] + ci[items] + jnp.sum(su[users] * si[items], -1)

    return jax.vmap(one)(params, keys)


@partial(jax.jit, static_argnames=("spec", "n_extra", "dims"))
def _one_draw_per_user(params, keys, terms, users, items, offset, *, spec, n_extra, dims):
    """Row ``j`` scores all ``items`` for ``users[j]`` under draw ``j``: ``(users, items)``."""

    def one(p, k, u):
        cu, su, ci, si = _entity_scores(p, k, terms, spec=spec, n_extra=n_extra, dims=dims)
        return offset + cu[u] + ci[items] + si[items] @ su[u]

    return jax.vmap(one)(params, keys, users)


# --------------------------------------------------------------------------- roles
def entity_roles(model: BayesianFM, user: str | None, item: str | None) -> tuple[Field, Field]:
    """The user and item fields of a fitted model, checked to carry every feature."""
    fields = model.encoder_.spec.fields
    entities = [f for f in fields if isinstance(f, Categorical) and f.owner is None]
    by_column = {f.column: f for f in entities}
    if user is None and item is None:
        if hasattr(model, "user") and hasattr(model, "item"):
            user, item = model.user, model.item
        elif len(entities) == 2:
            user, item = entities[0].column, entities[1].column
        else:
            raise ValueError(
                f"user, item: the model has {len(entities)} entity fields "
                f"{[f.column for f in entities]}; pass user= and item= to say which columns "
                "hold the user and the item ids"
            )
    for arg, col in (("user", user), ("item", item)):
        if col not in by_column:
            raise ValueError(
                f"{arg}: got {col!r}; allowed are the model's entity columns {sorted(by_column)}"
            )
    if user == item:
        raise ValueError(f"user, item: both are {user!r}; they must be different columns")
    for f in fields:
        if f.column in (user, item) and f.owner is None:
            continue
        if f.owner not in (user, item):
            raise ValueError(
                f"recommend: field {f.dim!r} (column {f.column!r}) belongs to neither the user "
                f"({user!r}) nor the item ({item!r}); recommendations need every feature to "
                "be an attribute of one of them (set owner=...)"
            )
    return by_column[user], by_column[item]


# ----------------------------------------------------------------------- the catalogue
@dataclass
class PairScorer:
    """Scores (user, item) pairs of a fitted model under its posterior draws.

    Build with :meth:`from_model`; ``users`` and ``items`` hold the level (or cold-start
    slot) index of each requested user and candidate.
    """

    model: Any
    user_field: Field
    item_field: Field
    user_ids: np.ndarray
    item_ids: np.ndarray
    users: np.ndarray
    items: np.ndarray
    terms: dict
    n_extra: tuple
    params: dict[str, np.ndarray]
    seed: int
    _table_cache: dict = field(default_factory=dict)

    @property
    def dims(self) -> tuple[str, str]:
        return (self.user_field.dim, self.item_field.dim)

    @property
    def n_draws(self) -> int:
        return int(self.params["w0"].shape[0])

    @classmethod
    def from_model(
        cls,
        model: BayesianFM,
        users: Any,
        candidates: Any = None,
        items: pd.DataFrame | None = None,
        user: str | None = None,
        item: str | None = None,
    ) -> PairScorer:
        """Encode the requested users and candidate items (with their side features)."""
        model._check_fitted()
        uf, itf = entity_roles(model, user, item)
        enc = model.encoder_
        fields = enc.spec.fields
        user_cols = _owned_columns(fields, uf.column)
        item_cols = _owned_columns(fields, itf.column)
        user_table = _entity_table("users", users, uf.column, user_cols)
        item_table = None
        if items is not None:
            item_table = _entity_table("items", items, itf.column, item_cols)
        if candidates is None:
            cand = list(enc.levels[itf.dim])
            if item_table is not None:
                known = set(cand)
                cand += [v for v in item_table.index if v not in known]
            cand_ids = np.asarray(cand, dtype=object)
        else:
            cand_ids = _unique_ids("candidates", candidates)
        user_ids = user_table.index.to_numpy()
        unknown_users = user_ids[enc.index(uf.dim, user_ids) < 0]
        unknown_items = cand_ids[enc.index(itf.dim, cand_ids) < 0]
        if model.cold_start == "error" and (len(unknown_users) or len(unknown_items)):
            shown = {uf.column: unknown_users[:5].tolist(), itf.column: unknown_items[:5].tolist()}
            raise ValueError(
                f"users/candidates: unseen ids {shown} and cold_start='error'; use "
                "cold_start='prior' to draw them from their group's prior"
            )
        _require_attributes("users", unknown_users, user_table, uf.column, user_cols)
        if len(unknown_items) and item_cols:
            if item_table is None:
                raise ValueError(
                    f"items: candidate(s) {unknown_items[:5].tolist()} were not seen in training; "
                    f"pass their side features as items=DataFrame with columns "
                    f"{[itf.column, *item_cols]}"
                )
            _require_attributes("items", unknown_items, item_table, itf.column, item_cols)
        table = _encoding_table(model, uf, itf, user_ids, cand_ids, user_table, item_table)
        encoded: Encoded = enc.transform(table)
        n_u = len(user_ids)
        engine = model._engine()
        n_extra = tuple(sorted((g, _bucket(m, 4)) for g, m in encoded.n_unknown.items() if m > 0))
        return cls(
            model=model,
            user_field=uf,
            item_field=itf,
            user_ids=user_ids,
            item_ids=cand_ids,
            users=encoded.entity_index[uf.dim][:n_u].astype(np.int32),
            items=encoded.entity_index[itf.dim][n_u:].astype(np.int32),
            terms=jax.tree.map(jnp.asarray, encoded.arrays(term_pad=True)["terms"]),
            n_extra=n_extra,
            params=engine.flat_params(),
            seed=model.random_state,
        )

    # ------------------------------------------------------------------- computing
    def _keys(self, draws: np.ndarray) -> jax.Array:
        base = jax.random.PRNGKey(self.seed)
        return jax.vmap(lambda d: jax.random.fold_in(base, d))(jnp.asarray(draws, jnp.uint32))

    def _static(self) -> dict:
        return {"spec": self.model.spec_, "n_extra": self.n_extra, "dims": self.dims}

    def _offset(self):
        return jnp.float32(self.model.offset_)

    def draw_batch(self) -> int:
        return min(128, _bucket(self.n_draws, 1))

    def _batched(self, draws: np.ndarray, fn, *args, host: bool = True):
        """Evaluate ``fn`` over ``draws`` in fixed-size, padded batches; concatenate."""
        size = self.draw_batch()
        outs = []
        for b0 in range(0, len(draws), size):
            sel = draws[b0 : b0 + size]
            pad = np.concatenate([sel, np.repeat(sel[-1:], size - len(sel))])
            p = {k: v[pad] for k, v in self.params.items()}
            out = fn(p, self._keys(pad), self.terms, *args, self._offset(), **self._static())
            outs.append(_head(out, len(sel)))
        join = np.concatenate if host else jnp.concatenate
        return jax.tree.map(
            lambda *parts: join([np.asarray(a) if host else a for a in parts]), *outs
        )

    def _tables(self, draws: np.ndarray):
        """Per-draw entity tables for ``draws``, kept while they fit in TABLE_FLOATS."""
        n_levels = sum(
            len(self.model.encoder_.levels[d]) + dict(self.n_extra).get(d, 0) for d in self.dims
        )
        if len(draws) * n_levels * (self.model.spec_.rank + 1) > TABLE_FLOATS:
            return None
        key = draws.tobytes()
        if self._table_cache.get("key") != key:
            self._table_cache = {
                "key": key,
                "tables": self._batched(draws, _entity_tables, host=False),
            }
        return self._table_cache["tables"]

    def grid(self, users: np.ndarray, items: np.ndarray, draws: np.ndarray) -> np.ndarray:
        """Latent means ``(len(draws), len(users), len(items))`` (indices into the tables)."""
        tables = self._tables(draws)
        if tables is not None:
            return np.asarray(_grid_from_tables(*tables, jnp.asarray(users), jnp.asarray(items)))
        return self._batched(draws, _grid_latent, jnp.asarray(users), jnp.asarray(items))

    def pairs(self, users: np.ndarray, items: np.ndarray, draws: np.ndarray) -> np.ndarray:
        """Latent means ``(len(draws), m)`` of the pairs ``(users[j], items[j])``."""
        return self._batched(draws, _pairs_latent, jnp.asarray(users), jnp.asarray(items))

    def one_draw_per_user(
        self, users: np.ndarray, items: np.ndarray, draws: np.ndarray
    ) -> np.ndarray:
        """Latent means ``(len(users), len(items))``: user ``j`` under draw ``draws[j]``."""
        p = {k: v[draws] for k, v in self.params.items()}
        out = _one_draw_per_user(
            p,
            self._keys(draws),
            self.terms,
            jnp.asarray(users),
            jnp.asarray(items),
            self._offset(),
            **self._static(),
        )
        return np.asarray(out)

    def blocks(self, n_draws: int, n_users: int) -> tuple[int, int]:
        """Users and candidates per block so that a block holds at most BLOCK_FLOATS."""
        per_pair = n_draws * max(1, self.model.spec_.n_classes)
        n_items = _bucket(len(self.items), 1)
        item_block = min(n_items, _floor_pow2(max(1, BLOCK_FLOATS // per_pair)))
        user_block = _floor_pow2(max(1, BLOCK_FLOATS // (per_pair * item_block)))
        return min(user_block, _bucket(n_users, 1)), item_block

    def iter_blocks(self, user_rows: np.ndarray, user_block: int, item_block: int) -> Iterator:
        """Yield ``(user_rows_block, item_positions, user_idx, item_idx)``, padded to size."""
        for u0 in range(0, len(user_rows), user_block):
            rows = user_rows[u0 : u0 + user_block]
            u_idx = _pad(self.users[rows], user_block)
            for i0 in range(0, len(self.items), item_block):
                pos = np.arange(i0, min(i0 + item_block, len(self.items)))
                yield rows, pos, u_idx, _pad(self.items[pos], item_block)

    def seen_mask(self, u_idx: np.ndarray, i_idx: np.ndarray) -> np.ndarray:
        """True for (user, item) pairs rated in training, shape ``(len(u_idx), len(i_idx))``."""
        seen = self.model._seen_pairs(*self.dims)
        n_u = len(self.model.encoder_.levels[self.dims[0]])
        n_i = len(self.model.encoder_.levels[self.dims[1]])
        known = (u_idx[:, None] < n_u) & (i_idx[None, :] < n_i)
        keys = u_idx[:, None].astype(np.int64) * n_i + i_idx[None, :]
        pos = np.minimum(np.searchsorted(seen, keys), max(len(seen) - 1, 0))
        return known & (seen[pos] == keys) if len(seen) else np.zeros(keys.shape, bool)

    # -------------------------------------------------------- observation-level summaries
    def expected(self, eta: np.ndarray, draws: np.ndarray) -> np.ndarray:
        """``E[y | draw]`` for latent means ``eta`` whose leading axis follows ``draws``."""
        model = self.model
        if model.task == "regression":
            return eta
        if model.task == "binary":
            return _success_prob(eta, model.link)
        probs = self._class_probs(eta, draws)
        return probs @ model.classes_.astype(np.float32)

    def prob_at_least(self, eta: np.ndarray, draws: np.ndarray, threshold: float) -> np.ndarray:
        """``P(y >= threshold | draw)``; ``P(y = 1 | draw)`` for the binary task."""
        model = self.model
        if model.task == "binary":
            return _success_prob(eta, model.link)
        if model.task == "regression":
            sigma = model.draws_.samples["sigma"].reshape(-1)[draws].astype(np.float32)
            sigma = sigma.reshape((-1,) + (1,) * (eta.ndim - 1))
            return np.asarray(ndtr((eta - threshold) / sigma))
        probs = self._class_probs(eta, draws)
        return probs[..., model.classes_ >= threshold].sum(-1)

    def _class_probs(self, eta: np.ndarray, draws: np.ndarray) -> np.ndarray:
        n_cut = self.model.spec_.n_classes - 1
        cut = self.model.draws_.samples["cutpoints"].reshape(-1, n_cut)[draws]
        lp = jax.vmap(ordered_probit_log_probs)(jnp.asarray(eta), jnp.asarray(cut))
        return np.exp(np.asarray(lp))


def _head(tree, n: int):
    """The first ``n`` entries (draws) of every leaf."""
    return jax.tree.map(lambda a: a[:n], tree)


def _success_prob(eta: np.ndarray, link: str) -> np.ndarray:
    if link == "logit":
        return np.asarray(jax.nn.sigmoid(eta))
    return np.asarray(ndtr(eta))


def _floor_pow2(n: int) -> int:
    return 1 << (max(1, int(n)).bit_length() - 1)


def _pad(a: np.ndarray, size: int) -> np.ndarray:
    out = np.empty(size, a.dtype)
    out[: len(a)] = a
    out[len(a) :] = a[-1] if len(a) else 0
    return out


def _unique_ids(argname: str, values: Any) -> np.ndarray:
    """Ids as a 1-d object array, duplicates dropped (first kept), validated non-empty."""
    if isinstance(values, str | bytes) or not hasattr(values, "__iter__"):
        raise TypeError(f"{argname}: got {type(values).__name__}; expected a sequence of ids")
    arr = pd.unique(pd.Series(list(values), dtype=object))
    if len(arr) == 0:
        raise ValueError(f"{argname}: got no ids; at least one is needed")
    if pd.isna(arr).any():
        raise ValueError(f"{argname}: holds missing ids (NaN/None); every id must be given")
    return np.asarray(arr, dtype=object)


def _entity_table(argname: str, values: Any, column: str, attrs: Sequence[str]) -> pd.DataFrame:
    """A table indexed by entity id: from a DataFrame (one row per id kept) or a list of ids."""
    if isinstance(values, pd.DataFrame):
        if column not in values.columns:
            raise ValueError(
                f"{argname}: missing column {column!r}; the table has {list(values.columns)}"
            )
        ids = _unique_ids(argname, values[column].tolist())
        table = values.drop_duplicates(subset=[column], keep="first").set_index(column)
        table = table.reindex(ids)
        return table[[c for c in attrs if c in table.columns]]
    ids = _unique_ids(argname, values)
    return pd.DataFrame(index=pd.Index(ids, dtype=object))


def _require_attributes(
    argname: str, unknown: np.ndarray, table: pd.DataFrame, column: str, attrs: Sequence[str]
) -> None:
    """New entities need every owned attribute, since it is all the model knows of them."""
    if not len(unknown) or not attrs:
        return
    missing = [c for c in attrs if c not in table.columns]
    if missing:
        raise ValueError(
            f"{argname}: id(s) {unknown[:5].tolist()} were not seen in training and the table "
            f"lacks their column(s) {missing}; pass a DataFrame with columns {[column, *attrs]}"
        )


def _encoding_table(model, uf, itf, user_ids, cand_ids, user_table, item_table) -> pd.DataFrame:
    """Rows ``[users..., candidates...]`` with every column the encoder reads.

    Known entities take their attributes from the training tables (the encoder ignores the
    values given here), so placeholders fill those cells.
    """
    enc = model.encoder_
    known_user, known_item = enc.levels[uf.dim][0], enc.levels[itf.dim][0]
    n_u, n_i = len(user_ids), len(cand_ids)
    cols: dict[str, Any] = {
        uf.column: np.concatenate([user_ids, np.full(n_i, known_user, dtype=object)]),
        itf.column: np.concatenate([np.full(n_u, known_item, dtype=object), cand_ids]),
    }
    tables = {uf.column: (user_table, 0), itf.column: (item_table, 1)}
    for f in enc.spec.fields:
        if f.owner is None or isinstance(f, Implicit) or f.column in cols:
            continue
        table, side = tables[f.owner]
        ids = user_ids if side == 0 else cand_ids
        other_len = n_i if side == 0 else n_u
        own = enc.entity_tables[_dim_of(enc, f.owner)][f.column]
        values = pd.Series(own.reindex(ids).to_numpy(), dtype=object)
        if table is not None and f.column in table.columns:
            given = pd.Series(table[f.column].reindex(ids).to_numpy(), dtype=object)
            values = values.where(values.notna(), given)
        filler = pd.Series([own.iloc[0]] * other_len, dtype=object)
        parts = [values, filler] if side == 0 else [filler, values]
        col = pd.concat(parts, ignore_index=True)
        cols[f.column] = _restore_dtype(col, own)
    return pd.DataFrame(cols)


def _owned_columns(fields: Sequence[Field], owner: str) -> list[str]:
    return [f.column for f in fields if f.owner == owner and not isinstance(f, Implicit)]


def _dim_of(enc, column: str) -> str:
    return next(f.dim for f in enc.spec.fields if f.column == column and f.owner is None)


def _restore_dtype(col: pd.Series, like: pd.Series) -> pd.Series:
    if like.dtype.kind in "iufb":
        return pd.to_numeric(col, errors="coerce")
    return col


# ------------------------------------------------------------------------- ranking
def top_n(
    kept_score: np.ndarray,
    kept_pos: np.ndarray,
    score: np.ndarray,
    pos: np.ndarray,
    n: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-user top-``n`` lists with a new block of scores.

    Higher scores rank first; ties go to the lower candidate position (the candidates'
    order). ``-inf`` marks an excluded pair. Shapes: kept ``(users, n)``, block
    ``(users, m)`` with ``pos`` ``(m,)``.
    """
    all_score = np.concatenate([kept_score, score], 1)
    all_pos = np.concatenate([kept_pos, np.broadcast_to(pos, score.shape)], 1)
    order = np.lexsort((all_pos, -all_score), axis=-1)[:, :n]
    return np.take_along_axis(all_score, order, 1), np.take_along_axis(all_pos, order, 1)


def _check_options(model, n, strategy, threshold, quantile, prob, interval) -> None:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n: got {n!r}; must be an integer >= 1")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy: got {strategy!r}; allowed are {list(STRATEGIES)}")
    if interval not in INTERVALS:
        raise ValueError(f"interval: got {interval!r}; allowed are {list(INTERVALS)}")
    for name, value in (("quantile", quantile), ("prob", prob)):
        if isinstance(value, bool) or not isinstance(value, float | int) or not 0 < value < 1:
            raise ValueError(f"{name}: got {value!r}; must be a number in (0, 1)")
    if strategy == "prob" and model.task != "binary":
        if threshold is None or not np.isfinite(threshold):
            raise ValueError(
                f"threshold: got {threshold!r}; strategy='prob' with task={model.task!r} needs "
                "a finite rating threshold t, and ranks by P(y >= t)"
            )


def recommend(
    model: BayesianFM,
    users: Any,
    n: int = 10,
    candidates: Any = None,
    exclude_seen: bool = True,
    strategy: str = "mean",
    *,
    items: pd.DataFrame | None = None,
    threshold: float | None = None,
    quantile: float = 0.9,
    prob: float = 0.9,
    interval: str = "latent",
    seed: int | None = None,
    user: str | None = None,
    item: str | None = None,
) -> pd.DataFrame:
    """Top-``n`` items per user; see :meth:`bayesfm.BayesianFM.recommend`."""
    model._check_fitted()
    _check_options(model, n, strategy, threshold, quantile, prob, interval)
    scorer = PairScorer.from_model(model, users, candidates, items, user, item)
    n_users = len(scorer.users)
    draws = np.arange(scorer.n_draws)
    per_user_draw = None
    if strategy == "thompson":
        rng = np.random.default_rng(seed)
        per_user_draw = rng.integers(0, scorer.n_draws, size=n_users)
    n_eval = 1 if strategy == "thompson" else scorer.n_draws
    user_block, item_block = scorer.blocks(n_eval, n_users)
    kept_score = np.full((n_users, n), -np.inf, np.float64)
    kept_pos = np.full((n_users, n), np.iinfo(np.int64).max, np.int64)
    for rows, pos, u_idx, i_idx in scorer.iter_blocks(np.arange(n_users), user_block, item_block):
        if strategy == "thompson":
            d = _pad(per_user_draw[rows], len(u_idx))
            eta = scorer.one_draw_per_user(u_idx, i_idx, d)
            score = scorer.expected(eta, d)
        else:
            eta = scorer.grid(u_idx, i_idx, draws)
            if strategy == "mean":
                score = scorer.expected(eta, draws).mean(0)
            elif strategy == "prob":
                score = scorer.prob_at_least(eta, draws, threshold).mean(0)
            else:
                score = np.quantile(scorer.expected(eta, draws), quantile, axis=0)
        score = np.asarray(score, np.float64)[: len(rows), : len(pos)]
        if exclude_seen:
            score[scorer.seen_mask(u_idx[: len(rows)], i_idx[: len(pos)])] = -np.inf
        kept_score[rows], kept_pos[rows] = top_n(kept_score[rows], kept_pos[rows], score, pos, n)
    return _summarize(scorer, kept_score, kept_pos, prob, interval)


def _summarize(scorer: PairScorer, score, pos, prob: float, interval: str) -> pd.DataFrame:
    """The tidy table, with the posterior mean and interval of every recommended pair."""
    model = scorer.model
    valid = np.isfinite(score)
    user_row, rank = np.nonzero(valid)
    item_pos = pos[valid]
    m = len(user_row)
    mean, lower, upper = np.empty(m), np.empty(m), np.empty(m)
    draws = np.arange(scorer.n_draws)
    q = [(1 - prob) / 2, (1 + prob) / 2]
    chunk = max(1, BLOCK_FLOATS // scorer.n_draws)
    for s0 in range(0, m, chunk):
        sl = slice(s0, min(s0 + chunk, m))
        size = _bucket(sl.stop - sl.start, 1)
        u = _pad(scorer.users[user_row[sl]], size)
        i = _pad(scorer.items[item_pos[sl]], size)
        eta = scorer.pairs(u, i, draws)[:, : sl.stop - sl.start]
        expected = scorer.expected(eta, draws)
        mean[sl] = expected.mean(0)
        if interval == "latent":
            lower[sl], upper[sl] = np.quantile(expected, q, axis=0)
        else:
            rng = np.random.default_rng([model.random_state, s0])
            lower[sl], upper[sl] = model._predictive_quantiles(eta, rng, q)
    return pd.DataFrame(
        {
            scorer.user_field.column: scorer.user_ids[user_row],
            "rank": rank + 1,
            scorer.item_field.column: scorer.item_ids[item_pos],
            "score": score[valid],
            "mean": mean,
            "lower": lower,
            "upper": upper,
        }
    )
