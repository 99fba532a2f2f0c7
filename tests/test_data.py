"""Feature specs and encoding: indices, values, entity aggregation, unknown levels, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import bayesfm as bfm
from bayesfm.data import ROW, FittedEncoder


@pytest.fixture
def table():
    return pd.DataFrame(
        {
            "user_id": [10, 10, 20, 30],
            "item_id": ["a", "b", "a", "c"],
            "age": [20.0, 20.0, 40.0, 60.0],
            "occupation": ["x", "x", "y", "x"],
            "genres": [("g1", "g2"), "g3", ["g1", "g2"], "g1|g3"],
            "hour": [1.0, 2.0, 3.0, 4.0],
        }
    )


SPEC = bfm.FeatureSpec(
    [
        bfm.Categorical("user_id"),
        bfm.Categorical("item_id"),
        bfm.Numeric("age", owner="user_id"),
        bfm.Categorical("occupation", owner="user_id"),
        bfm.MultiHot("genres"),
        bfm.Numeric("hour"),
        bfm.Implicit(owner="user_id", members="item_id"),
    ]
)


def test_structure_and_dims(table):
    enc = FittedEncoder.fit(SPEC, table)
    st = enc.structure
    assert st.entities == (("user", 3), ("item", 3))
    carriers = {t.dim: t.carrier for t in st.terms}
    assert carriers == {
        "age": "user",
        "occupation": "user",
        "genres": ROW,
        "hour": ROW,
        "implicit_item": "user",
    }
    assert st.groups == ("user", "item", "age", "occupation", "genres", "hour", "implicit_item")


def test_encoding_values(table):
    enc = FittedEncoder.fit(SPEC, table)
    e = enc.transform(table)
    np.testing.assert_array_equal(e.entity_index["user"], [0, 0, 1, 2])
    np.testing.assert_array_equal(e.entity_index["item"], [0, 1, 0, 2])
    # age is per user (3 users), standardized with the training rows' mean and sd
    u, i, v = e.terms["age"]
    ages = np.array([20.0, 20.0, 40.0, 60.0])
    np.testing.assert_allclose(v, (np.array([20.0, 40.0, 60.0]) - ages.mean()) / ages.std())
    np.testing.assert_array_equal(u, [0, 1, 2])
    # multi-hot: accepts tuples, lists and delimited strings; values 1/len
    u, i, v = e.terms["genres"]
    levels = list(enc.levels["genres"])
    assert levels == ["g1", "g2", "g3"]
    np.testing.assert_array_equal(u, [0, 0, 1, 2, 2, 3, 3])
    np.testing.assert_array_equal(i, [0, 1, 2, 0, 1, 0, 2])
    np.testing.assert_allclose(v, [0.5, 0.5, 1.0, 0.5, 0.5, 0.5, 0.5])
    # implicit: items each user rated, normalized by 1/sqrt(count)
    u, i, v = e.terms["implicit_item"]
    np.testing.assert_array_equal(u, [0, 0, 1, 2])
    np.testing.assert_array_equal(i, [0, 1, 0, 2])
    np.testing.assert_allclose(v, [2**-0.5, 2**-0.5, 1.0, 1.0])


def test_unknown_levels_get_slots_after_training_levels(table):
    enc = FittedEncoder.fit(SPEC, table)
    new = table.iloc[:3].copy()
    new["user_id"] = [99, 10, 98]
    new["occupation"] = ["zz", "x", "x"]
    new["genres"] = ["g1|g9", "g2", "g1"]
    e = enc.transform(new)
    np.testing.assert_array_equal(e.entity_index["user"], [4, 0, 3])  # 3 + rank of "98","99"
    assert e.n_unknown == {"user": 2, "occupation": 1, "genres": 1}
    # new users' owned attributes come from the new table, after the 3 known users
    u, i, v = e.terms["occupation"]
    np.testing.assert_array_equal(u, [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(i, [0, 1, 0, 0, 2])  # user 98 is "x", user 99 is new "zz"
    assert enc.unknown_levels(new) == {"user_id": [99, 98], "occupation": ["zz"]}


@pytest.mark.parametrize(
    ("mutate", "error", "match"),
    [
        (lambda t: t.drop(columns="age"), ValueError, r"missing column\(s\) \['age'\]"),
        (lambda t: t.assign(age=["a", "b", "c", "d"]), TypeError, "column 'age'.*non-numeric"),
        (lambda t: t.assign(hour=[1.0, np.nan, 2.0, 3.0]), ValueError, "column 'hour'.*NaN"),
        (lambda t: t.iloc[:0], ValueError, "empty table"),
        (lambda t: t.assign(genres=[1, 2, 3, 4]), TypeError, "column 'genres'.*multi-hot"),
    ],
)
def test_bad_tables(table, mutate, error, match):
    with pytest.raises(error, match=match):
        FittedEncoder.fit(SPEC, mutate(table))


def test_spec_validation():
    with pytest.raises(ValueError, match="owner.*'nobody'.*allowed owners"):
        bfm.FeatureSpec([bfm.Categorical("user_id"), bfm.Numeric("age", owner="nobody")])
    with pytest.raises(ValueError, match="duplicate field names"):
        bfm.FeatureSpec([bfm.Categorical("user_id"), bfm.Categorical("user_id")])
    with pytest.raises(TypeError, match="fields: got 'user_id'"):
        bfm.FeatureSpec(["user_id"])
    with pytest.raises(ValueError, match="at least one entity field"):
        bfm.FeatureSpec([bfm.Numeric("age")])


def test_spec_round_trip():
    assert bfm.FeatureSpec.from_dict(SPEC.to_dict()) == SPEC


def test_inconsistent_entity_attribute_takes_first_row(table):
    enc = FittedEncoder.fit(SPEC, table)
    assert enc.entity_tables["user"].loc[10, "occupation"] == "x"
