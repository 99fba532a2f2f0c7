"""Feature specifications and the encoding of pandas tables into a JAX-friendly design.

The design follows the *relational block* layout (Rendle, "Scaling Factorization Machines to
Relational Data"; myFM's ``RelationBlock``): every one-hot field without an owner is an
*entity* (user, item, ...) with one embedding table gathered per row, and features that belong
to an entity (a user's occupation, an item's genres, the set of items a user rated) are
aggregated once per entity and then gathered per row. Row-level side features (numeric or
multi-hot columns without an owner) are aggregated per row.

Every non-entity feature field is stored as a flat coordinate list ("term"): ``unit`` (which
entity or row it belongs to), ``index`` (which level of the field) and ``value``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "Categorical",
    "Numeric",
    "MultiHot",
    "Implicit",
    "FeatureSpec",
    "Structure",
    "FittedEncoder",
]

ROW = "__row__"


def _dim_from_column(column: str) -> str:
    return column[: -len("_id")] if column.endswith("_id") and len(column) > 3 else column


@dataclass(frozen=True)
class Field:
    """Base class of a feature field; each field is one hyperprior group."""

    column: str
    owner: str | None = None
    name: str | None = None

    @property
    def dim(self) -> str:
        """Name of the field's dimension in the posterior (``user_id`` -> ``user``).

        Examples
        --------
        >>> import bayesfm as bfm
        >>> bfm.Categorical("user_id").dim, bfm.Categorical("zip", name="zipcode").dim
        ('user', 'zipcode')
        """
        return self.name or _dim_from_column(self.column)

    @property
    def columns(self) -> tuple[str, ...]:
        """Columns of the input table this field reads.

        Examples
        --------
        >>> import bayesfm as bfm
        >>> bfm.Numeric("age", owner="user_id").columns
        ('age',)
        """
        return (self.column,)


@dataclass(frozen=True)
class Categorical(Field):
    """One-hot field such as a user id, an item id or an occupation.

    Parameters
    ----------
    column : str
        Column of the input table.
    owner : str, optional
        Column of the entity this attribute belongs to (for example ``"user_id"`` for an
        occupation). Owned features are aggregated once per entity. Without an owner a
        categorical field is itself an entity.
    name : str, optional
        Dimension name in the posterior; defaults to the column without a trailing ``_id``.

    Examples
    --------
    >>> import bayesfm as bfm
    >>> bfm.Categorical("user_id").dim
    'user'
    >>> bfm.Categorical("occupation", owner="user_id").owner
    'user_id'
    """


@dataclass(frozen=True)
class Numeric(Field):
    """Numeric field, standardized with the training mean and standard deviation.

    Parameters
    ----------
    column : str
        Column of the input table; its values must be numbers.
    owner : str, optional
        Column of the entity this attribute belongs to (for example ``"user_id"`` for an
        age); owned features are aggregated once per entity.
    name : str, optional
        Dimension name in the posterior; defaults to the column.

    Examples
    --------
    >>> import bayesfm as bfm
    >>> bfm.Numeric("age", owner="user_id").dim
    'age'
    """


@dataclass(frozen=True)
class MultiHot(Field):
    """Set-valued field: a list/tuple/set per row, or a delimited string such as ``"a|b"``.

    Each member gets the value ``1 / len(set)`` so that a row's contributions sum to one.

    Parameters
    ----------
    column : str
        Column of the input table.
    owner : str, optional
        Column of the entity this attribute belongs to (for example ``"item_id"`` for the
        genres of a movie); owned features are aggregated once per entity.
    name : str, optional
        Dimension name in the posterior; defaults to the column.
    sep : str
        Delimiter used when the column holds strings.

    Examples
    --------
    >>> import bayesfm as bfm
    >>> bfm.MultiHot("genres", owner="item_id").dim
    'genres'
    >>> bfm.MultiHot("tags", sep=",").sep
    ','
    """

    sep: str = "|"


@dataclass(frozen=True, init=False)
class Implicit(Field):
    """Implicit feedback as in SVD++: the set of ``members`` each ``owner`` rated in training.

    Each member gets the value ``1 / sqrt(len(set))``. ``Implicit(owner="item_id",
    members="user_id")`` is the "flipped" variant (the users who rated each item).

    Parameters
    ----------
    owner : str
        Column of the entity whose sets are built (an entity field of the spec).
    members : str
        Column of the entity that makes up the sets (an entity field of the spec).
    name : str, optional
        Dimension name in the posterior; defaults to ``implicit_<members without _id>``.

    Examples
    --------
    >>> import bayesfm as bfm
    >>> bfm.Implicit(owner="user_id", members="item_id").dim
    'implicit_item'
    """

    members: str = ""

    def __init__(self, owner: str, members: str, name: str | None = None) -> None:
        object.__setattr__(self, "column", members)
        object.__setattr__(self, "owner", owner)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "members", members)

    @property
    def dim(self) -> str:
        """Name of the field's dimension in the posterior (``implicit_<members>``).

        Examples
        --------
        >>> import bayesfm as bfm
        >>> bfm.Implicit(owner="item_id", members="user_id").dim
        'implicit_user'
        """
        return self.name or f"implicit_{_dim_from_column(self.members)}"

    @property
    def columns(self) -> tuple[str, ...]:
        """Columns of the input table this field reads: the owner and the members.

        Examples
        --------
        >>> import bayesfm as bfm
        >>> bfm.Implicit(owner="user_id", members="item_id").columns
        ('user_id', 'item_id')
        """
        return (self.owner, self.members)


class FeatureSpec:
    """An ordered list of fields that says how table columns become FM features.

    Parameters
    ----------
    fields : sequence of Field
        ``Categorical``, ``Numeric``, ``MultiHot`` and ``Implicit`` fields.

    Raises
    ------
    ValueError
        No fields, duplicate field names, no entity field (a ``Categorical`` without an
        owner), or an ``owner`` / ``members`` that is not an entity field of the spec.
    TypeError
        An element of ``fields`` is not a field.

    Examples
    --------
    >>> import bayesfm as bfm
    >>> spec = bfm.FeatureSpec([bfm.Categorical("user_id"), bfm.Categorical("item_id"),
    ...                         bfm.MultiHot("genres", owner="item_id")])
    >>> [f.dim for f in spec.fields]
    ['user', 'item', 'genres']
    """

    def __init__(self, fields: Sequence[Field]) -> None:
        fields = tuple(fields)
        if not fields:
            raise ValueError("fields: got an empty list; a FeatureSpec needs at least one field")
        for f in fields:
            if not isinstance(f, Field):
                raise TypeError(
                    f"fields: got {f!r} of type {type(f).__name__}; allowed are Categorical, "
                    "Numeric, MultiHot and Implicit"
                )
        dims = [f.dim for f in fields]
        dup = sorted({d for d in dims if dims.count(d) > 1})
        if dup:
            raise ValueError(f"fields: duplicate field names {dup}; give each field a unique name=")
        entities = {f.column for f in fields if isinstance(f, Categorical) and f.owner is None}
        if not entities:
            raise ValueError(
                "fields: no Categorical field without an owner; at least one entity field "
                "(such as Categorical('user_id')) is needed"
            )
        for f in fields:
            if f.owner is not None and f.owner not in entities:
                raise ValueError(
                    f"owner: field {f.dim!r} names owner {f.owner!r}, which is not a Categorical "
                    f"field without an owner in this spec; allowed owners are {sorted(entities)}"
                )
            if isinstance(f, Implicit) and f.members not in entities:
                raise ValueError(
                    f"members: implicit field {f.dim!r} names members {f.members!r}, which is not "
                    f"an entity field of this spec; allowed are {sorted(entities)}"
                )
        self.fields = fields

    def __repr__(self) -> str:
        return f"FeatureSpec({list(self.fields)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FeatureSpec) and self.fields == other.fields

    def __hash__(self) -> int:
        return hash(self.fields)

    @property
    def columns(self) -> list[str]:
        """All input columns the spec reads, in order, without duplicates.

        Examples
        --------
        >>> import bayesfm as bfm
        >>> spec = bfm.FeatureSpec([bfm.Categorical("user_id"), bfm.Categorical("item_id"),
        ...                         bfm.Implicit(owner="user_id", members="item_id")])
        >>> spec.columns
        ['user_id', 'item_id']
        """
        out: list[str] = []
        for f in self.fields:
            for c in f.columns:
                if c not in out:
                    out.append(c)
        return out

    def to_dict(self) -> list[dict[str, Any]]:
        """A JSON-serializable description, inverse of :meth:`from_dict`.

        Returns
        -------
        list of dict
            One dict per field: ``type``, ``owner``, ``name`` and ``column`` (``members``
            for implicit fields, plus ``sep`` for multi-hot ones).

        Examples
        --------
        >>> import bayesfm as bfm
        >>> bfm.FeatureSpec([bfm.Categorical("user_id")]).to_dict()
        [{'type': 'Categorical', 'owner': None, 'name': None, 'column': 'user_id'}]
        """
        out = []
        for f in self.fields:
            d: dict[str, Any] = {"type": type(f).__name__, "owner": f.owner, "name": f.name}
            if isinstance(f, Implicit):
                d["members"] = f.members
            else:
                d["column"] = f.column
            if isinstance(f, MultiHot):
                d["sep"] = f.sep
            out.append(d)
        return out

    @classmethod
    def from_dict(cls, items: Sequence[dict[str, Any]]) -> FeatureSpec:
        """Rebuild a spec written by :meth:`to_dict`.

        Parameters
        ----------
        items : sequence of dict
            Field descriptions as written by :meth:`to_dict`.

        Returns
        -------
        FeatureSpec
            The rebuilt spec.

        Raises
        ------
        ValueError
            An unknown field ``type``.

        Examples
        --------
        >>> import bayesfm as bfm
        >>> spec = bfm.FeatureSpec([bfm.Categorical("user_id"), bfm.Numeric("age")])
        >>> bfm.FeatureSpec.from_dict(spec.to_dict()) == spec
        True
        """
        kinds = {"Categorical": Categorical, "Numeric": Numeric, "MultiHot": MultiHot}
        fields: list[Field] = []
        for d in items:
            d = dict(d)
            kind = d.pop("type")
            if kind == "Implicit":
                fields.append(Implicit(owner=d["owner"], members=d["members"], name=d.get("name")))
            elif kind in kinds:
                fields.append(kinds[kind](**d))
            else:
                raise ValueError(f"type: unknown field type {kind!r}; allowed {sorted(kinds)}")
        return cls(fields)


# --------------------------------------------------------------------------------------------
# Static structure (hashable, closed over by jitted code) and encoded arrays (jit arguments)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TermInfo:
    """A non-entity feature field, aggregated per ``carrier`` (an entity dim or ``ROW``)."""

    dim: str
    carrier: str
    n_levels: int


@dataclass(frozen=True)
class Structure:
    """The static shape of the factorization model: which tables exist and how they combine.

    ``entities`` are (dim, n_levels) of one-hot fields without an owner; ``terms`` are the other
    fields. Sizes are training sizes; prediction appends slots for unseen levels.
    """

    entities: tuple[tuple[str, int], ...]
    terms: tuple[TermInfo, ...]

    @property
    def groups(self) -> tuple[str, ...]:
        """Every hyperprior group (field dim), entities first."""
        return tuple(d for d, _ in self.entities) + tuple(t.dim for t in self.terms)

    def n_levels(self, dim: str) -> int:
        """Number of training levels of field ``dim``."""
        for d, n in self.entities:
            if d == dim:
                return n
        for t in self.terms:
            if t.dim == dim:
                return t.n_levels
        raise KeyError(dim)


def _is_numeric_dtype(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)


def _as_set(value: Any, sep: str, column: str) -> tuple:
    if isinstance(value, str):
        return tuple(dict.fromkeys(v for v in value.split(sep) if v != "")) if value else ()
    if isinstance(value, list | tuple | set | frozenset | np.ndarray):
        return tuple(dict.fromkeys(value))  # a set: repeated members count once
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ()
    raise TypeError(
        f"column {column!r}: got {value!r} of type {type(value).__name__}; a multi-hot column "
        f"holds lists, tuples, sets or {sep!r}-delimited strings"
    )


def _bucket(n: int, minimum: int = 8) -> int:
    """Round up to a power of two so that shapes (and compiled programs) repeat."""
    return max(minimum, 1 << max(0, math.ceil(math.log2(max(n, 1)))))


@dataclass
class FittedEncoder:
    """Encoders fitted on training data: level maps, numeric scalings and implicit sets.

    Build with :meth:`fit`; :meth:`transform` encodes a table into arrays for the model.
    """

    spec: FeatureSpec
    levels: dict[str, np.ndarray] = field(default_factory=dict)
    scaling: dict[str, tuple[float, float]] = field(default_factory=dict)
    # per owner dim: the training entity table of owned non-implicit columns (indexed by level)
    entity_tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    # per implicit dim: COO (owner level, member level) from the training table
    implicit_pairs: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    # ---------------------------------------------------------------- validation helpers
    @staticmethod
    def check_table(X: Any, columns: Sequence[str], argname: str = "X") -> pd.DataFrame:
        """Validate that ``X`` is a non-empty DataFrame holding ``columns``."""
        if not isinstance(X, pd.DataFrame):
            raise TypeError(
                f"{argname}: got {type(X).__name__}; expected a pandas DataFrame with columns "
                f"{list(columns)}"
            )
        if len(X) == 0:
            raise ValueError(f"{argname}: got an empty table (0 rows); at least one row is needed")
        missing = [c for c in columns if c not in X.columns]
        if missing:
            raise ValueError(
                f"{argname}: missing column(s) {missing}; the feature spec needs {list(columns)}, "
                f"the table has {list(X.columns)}"
            )
        return X

    def _check_numeric(self, X: pd.DataFrame, f: Field) -> np.ndarray:
        s = X[f.column]
        if not _is_numeric_dtype(s):
            bad = s[pd.to_numeric(s, errors="coerce").isna() & s.notna()]
            example = bad.iloc[0] if len(bad) else s.iloc[0]
            raise TypeError(
                f"column {f.column!r}: numeric field holds non-numeric values (dtype {s.dtype}, "
                f"e.g. {example!r}); allowed are finite numbers"
            )
        v = s.to_numpy(dtype=np.float64)
        if not np.all(np.isfinite(v)):
            raise ValueError(
                f"column {f.column!r}: numeric field holds NaN or inf at row(s) "
                f"{np.flatnonzero(~np.isfinite(v))[:5].tolist()}; allowed are finite numbers"
            )
        return v

    # ------------------------------------------------------------------------ fitting
    @classmethod
    def fit(cls, spec: FeatureSpec, X: pd.DataFrame) -> FittedEncoder:
        """Fit level maps, scalings, entity tables and implicit sets on training data."""
        X = cls.check_table(X, spec.columns)
        enc = cls(spec=spec)
        for f in spec.fields:
            if isinstance(f, Categorical):
                col = X[f.column]
                if col.isna().any():
                    raise ValueError(
                        f"column {f.column!r}: holds missing values at row(s) "
                        f"{np.flatnonzero(col.isna().to_numpy())[:5].tolist()}; categorical "
                        "fields need a level in every training row"
                    )
                enc.levels[f.dim] = pd.unique(col.to_numpy())
            elif isinstance(f, MultiHot):
                sets = [_as_set(v, f.sep, f.column) for v in X[f.column].to_numpy()]
                enc.levels[f.dim] = np.asarray(
                    sorted({m for s in sets for m in s}, key=str), dtype=object
                )
            elif isinstance(f, Numeric):
                v = enc._check_numeric(X, f)
                sd = float(v.std())
                enc.scaling[f.dim] = (float(v.mean()), sd if sd > 0 else 1.0)
                enc.levels[f.dim] = np.asarray([f.column], dtype=object)
        by_dim = {f.column: f.dim for f in spec.fields if isinstance(f, Categorical)}
        for f in spec.fields:
            if isinstance(f, Implicit):
                enc.levels[f.dim] = enc.levels[by_dim[f.members]]
        # entity tables of owned attributes, from the first training row of each entity
        for owner in {f.owner for f in spec.fields if f.owner and not isinstance(f, Implicit)}:
            cols = [
                f.column for f in spec.fields if f.owner == owner and not isinstance(f, Implicit)
            ]
            table = X[[owner, *cols]].drop_duplicates(subset=[owner], keep="first")
            table = table.set_index(owner).reindex(enc.levels[by_dim[owner]])
            enc.entity_tables[by_dim[owner]] = table
        for f in spec.fields:
            if isinstance(f, Implicit):
                o = enc.index(by_dim[f.owner], X[f.owner].to_numpy())
                m = enc.index(by_dim[f.members], X[f.members].to_numpy())
                pairs = np.unique(np.stack([o, m]), axis=1)
                enc.implicit_pairs[f.dim] = (pairs[0], pairs[1])
        return enc

    # --------------------------------------------------------------------- encoding
    def index(self, dim: str, values: np.ndarray) -> np.ndarray:
        """Map values of field ``dim`` to level indices; unseen values map to -1."""
        idx = pd.Index(self.levels[dim]).get_indexer(values)
        return idx.astype(np.int64)

    @property
    def structure(self) -> Structure:
        """The static model structure implied by the fitted levels."""
        entities, terms = [], []
        for f in self.spec.fields:
            if isinstance(f, Categorical) and f.owner is None:
                entities.append((f.dim, len(self.levels[f.dim])))
        dims = {f.column: f.dim for f in self.spec.fields if isinstance(f, Categorical)}
        for f in self.spec.fields:
            if not (isinstance(f, Categorical) and f.owner is None):
                carrier = dims[f.owner] if f.owner else ROW
                terms.append(TermInfo(f.dim, carrier, len(self.levels[f.dim])))
        return Structure(tuple(entities), tuple(terms))

    def unknown_levels(self, X: pd.DataFrame) -> dict[str, list]:
        """Values of categorical fields in ``X`` that were not seen in training."""
        out = {}
        for f in self.spec.fields:
            if isinstance(f, Categorical):
                vals = X[f.column].to_numpy()
                new = pd.unique(vals[self.index(f.dim, vals) < 0])
                if len(new):
                    out[f.column] = list(new)
        return out

    def transform(self, X: pd.DataFrame, *, training: bool = False) -> Encoded:
        """Encode ``X`` into index/value arrays.

        Unseen levels get slots after the training levels (``n_levels + j``); the predictor
        fills those slots with draws from the field's hierarchical prior.
        """
        spec = self.spec
        X = self.check_table(X, spec.columns)
        n = len(X)
        dims = {f.column: f.dim for f in spec.fields if isinstance(f, Categorical)}
        entity_index: dict[str, np.ndarray] = {}
        n_unknown: dict[str, int] = {}
        new_entities: dict[str, np.ndarray] = {}
        for f in spec.fields:
            if isinstance(f, Categorical) and f.owner is None:
                idx, inv = self._index_with_slots(f.dim, X[f.column].to_numpy(), n_unknown)
                if inv is not None:
                    unk = np.flatnonzero(idx >= len(self.levels[f.dim]))
                    # the first row of X describing each new entity, in slot order
                    new_entities[f.dim] = pd.Series(unk).groupby(inv).first().to_numpy()
                entity_index[f.dim] = idx
        terms: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for f in spec.fields:
            if isinstance(f, Categorical) and f.owner is None:
                continue
            if f.owner is None:
                table, units = X, np.arange(n)
            else:
                od = dims[f.owner]
                if isinstance(f, Implicit):
                    o, m = self.implicit_pairs[f.dim]
                    cnt = np.bincount(o, minlength=len(self.levels[od])).astype(np.float64)
                    val = 1.0 / np.sqrt(cnt[o])
                    terms[f.dim] = (o, m, val)
                    continue
                known = self.entity_tables[od]
                rows = new_entities.get(od, np.zeros(0, dtype=np.int64))
                table = pd.concat([known[[f.column]], X[[f.column]].iloc[rows]], ignore_index=True)
                units = np.arange(len(table))
            unit, index, value = self._encode_term(f, table, units, n_unknown)
            terms[f.dim] = (unit, index, value)
        return Encoded(n_rows=n, entity_index=entity_index, terms=terms, n_unknown=n_unknown)

    def _index_with_slots(
        self, dim: str, values: np.ndarray, n_unknown: dict[str, int]
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Level indices with unseen values mapped to slots ``n_levels + j`` (sorted by name).

        Records the number of slots in ``n_unknown[dim]``; returns the indices and the slot
        number of each unseen value (None when all were seen).
        """
        if len(values) == 0:
            return np.zeros(0, np.int64), None
        idx = self.index(dim, values)
        unk = idx < 0
        if not unk.any():
            return idx, None
        new_vals, inv = np.unique(values[unk].astype(str), return_inverse=True)
        idx[unk] = len(self.levels[dim]) + inv
        n_unknown[dim] = len(new_vals)
        return idx, inv

    def _encode_term(
        self, f: Field, table: pd.DataFrame, units: np.ndarray, n_unknown: dict[str, int]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if isinstance(f, Numeric):
            v = self._check_numeric(table, f)
            mu, sd = self.scaling[f.dim]
            return units, np.zeros(len(units), np.int64), (v - mu) / sd
        if isinstance(f, Categorical):
            idx, _ = self._index_with_slots(f.dim, table[f.column].to_numpy(), n_unknown)
            return units, idx, np.ones(len(units))
        assert isinstance(f, MultiHot)
        sets = [_as_set(v, f.sep, f.column) for v in table[f.column].to_numpy()]
        lengths = np.fromiter((len(s) for s in sets), np.int64, len(sets))
        members = np.asarray([m for s in sets for m in s], dtype=object)
        unit = np.repeat(units, lengths)
        idx, _ = self._index_with_slots(f.dim, members, n_unknown)
        value = np.repeat(1.0 / np.maximum(lengths, 1), lengths)
        return unit, idx, value


@dataclass
class Encoded:
    """Encoded arrays of one table (host-side numpy; padded by :meth:`arrays`)."""

    n_rows: int
    entity_index: dict[str, np.ndarray]
    terms: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    n_unknown: dict[str, int]

    def arrays(self, row_pad: int | None = None, term_pad: bool = False) -> dict[str, Any]:
        """Pytree of int32/float32 arrays; rows padded to ``row_pad`` with index 0.

        Terms are padded to a power-of-two length with zero values (``term_pad``) so that
        prediction on differently sized tables reuses one compiled program.
        """
        n = self.n_rows if row_pad is None else row_pad
        ent = {}
        for d, idx in self.entity_index.items():
            a = np.zeros(n, np.int32)
            a[: len(idx)] = idx
            ent[d] = a
        terms = {}
        for d, (u, i, v) in self.terms.items():
            m = _bucket(len(u)) if term_pad else len(u)
            uu, ii, vv = np.zeros(m, np.int32), np.zeros(m, np.int32), np.zeros(m, np.float32)
            order = np.argsort(u, kind="stable")  # sorted segments are faster to reduce
            uu[: len(u)], ii[: len(u)], vv[: len(u)] = u[order], i[order], v[order]
            if m > len(u) and len(u):
                uu[len(u) :] = uu[len(u) - 1]  # keep sorted; zero values add nothing
            terms[d] = {"unit": uu, "index": ii, "value": vv}
        return {"entity": ent, "terms": terms}
