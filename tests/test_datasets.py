"""Tests for bayesfm.datasets: the MovieLens-100K reader, its download, synthetic data."""

from __future__ import annotations

import hashlib
import http.server
import io
import math
import os
import threading
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bayesfm.datasets import (
    ML100K_SPLITS,
    download_movielens_100k,
    load_movielens_100k,
    make_synthetic,
    make_toy_mf,
)

COLUMNS = [
    "user_id",
    "item_id",
    "rating",
    "timestamp",
    "age",
    "gender",
    "occupation",
    "zip",
    "genres",
    "year",
]
GENRES = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
]


# --------------------------------------------------------------------------------------
# The real MovieLens-100K files
# --------------------------------------------------------------------------------------


def ml100k_dir() -> Path:
    """Folder of the real MovieLens-100K files: $BAYESFM_ML100K or ../shared/data/ml-100k.

    Fails (rather than skips) when the data are missing, unless BAYESFM_ALLOW_NO_ML100K=1.
    """
    env = os.environ.get("BAYESFM_ML100K")
    if env:
        folder, origin = Path(env).expanduser(), "the environment variable BAYESFM_ML100K"
    else:
        folder = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"
        origin = "the default location ../shared/data/ml-100k beside the repository"
    if (folder / "u.data").is_file() or (folder / "ml-100k" / "u.data").is_file():
        return folder
    message = (
        f"MovieLens-100K not found at {folder} (from {origin}). Put the GroupLens ml-100k "
        "files there or set BAYESFM_ML100K to their folder; set BAYESFM_ALLOW_NO_ML100K=1 "
        "to skip these tests instead."
    )
    if os.environ.get("BAYESFM_ALLOW_NO_ML100K") == "1":
        pytest.skip(message)
    pytest.fail(message)


@pytest.fixture(scope="module")
def ml_path() -> Path:
    return ml100k_dir()


@pytest.fixture(scope="module")
def ml_all(ml_path: Path) -> pd.DataFrame:
    return load_movielens_100k(ml_path, split=None)


@pytest.fixture(scope="module")
def ml_ua(ml_path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    return load_movielens_100k(ml_path, split="ua")


def _pairs(df: pd.DataFrame) -> set[tuple[int, int]]:
    return set(zip(df["user_id"].tolist(), df["item_id"].tolist(), strict=True))


def test_ua_split_sizes(ml_ua, ml_all):
    train, test = ml_ua
    assert len(train) == 90570
    assert len(test) == 9430
    per_user = test.groupby("user_id").size()
    assert len(per_user) == 943
    assert (per_user == 10).all()
    assert not _pairs(train) & _pairs(test)
    assert _pairs(train) | _pairs(test) == _pairs(ml_all)


@pytest.mark.parametrize("split", ["u1", "u5"])
def test_cross_validation_fold_sizes(ml_path, ml_all, split):
    train, test = load_movielens_100k(ml_path, split=split)
    assert (len(train), len(test)) == (80000, 20000)
    assert not _pairs(train) & _pairs(test)
    assert _pairs(train) | _pairs(test) == _pairs(ml_all)


def test_ub_split_sizes(ml_path):
    train, test = load_movielens_100k(ml_path, split="ub")
    assert (len(train), len(test)) == (90570, 9430)
    assert (test.groupby("user_id").size() == 10).all()


def test_all_ratings(ml_all):
    assert len(ml_all) == 100000
    assert ml_all["user_id"].nunique() == 943
    assert ml_all["item_id"].nunique() == 1682
    assert set(ml_all["rating"].unique()) == {1, 2, 3, 4, 5}
    # File order is kept: the first line of u.data is "196 242 3 881250949".
    first = ml_all.iloc[0]
    assert (first["user_id"], first["item_id"], first["rating"], first["timestamp"]) == (
        196,
        242,
        3,
        881250949,
    )
    assert list(ml_all.index) == list(range(len(ml_all)))


def test_columns_and_dtypes(ml_ua, ml_all):
    for df in (*ml_ua, ml_all):
        assert list(df.columns) == COLUMNS
        for col in ("user_id", "item_id", "rating", "timestamp", "age"):
            assert pd.api.types.is_integer_dtype(df[col]), col
        for col in ("gender", "occupation", "zip"):
            assert pd.api.types.is_string_dtype(df[col]), col
            assert df[col].map(type).eq(str).all(), col
        assert df["year"].dtype == np.float64
        assert df["genres"].map(type).eq(tuple).all()
        assert df.drop(columns=["year"]).notna().all().all()


def test_genres_and_year(ml_all):
    items = ml_all.drop_duplicates("item_id").set_index("item_id")
    assert items.loc[1, "genres"] == ("Animation", "Children's", "Comedy")  # Toy Story
    assert items.loc[1, "year"] == 1995.0
    assert items.loc[2, "genres"] == ("Action", "Adventure", "Thriller")  # GoldenEye
    # Item 267 has no title, no date and only the "unknown" flag.
    assert items.loc[267, "genres"] == ("unknown",)
    assert math.isnan(items.loc[267, "year"])
    assert items.loc[1373, "genres"] == ("unknown",)
    assert items.loc[1373, "year"] == 1971.0
    assert items["year"].isna().sum() == 1
    assert ml_all["year"].isna().sum() == 9  # the ratings of item 267
    assert items["year"].min() == 1922.0 and items["year"].max() == 1998.0
    order = {g: i for i, g in enumerate(GENRES)}
    for genres in items["genres"]:
        assert 1 <= len(genres) <= 6
        assert set(genres) <= set(GENRES)
        assert [order[g] for g in genres] == sorted(order[g] for g in genres)


def test_user_side_information(ml_all):
    users = ml_all.drop_duplicates("user_id").set_index("user_id")
    assert tuple(users.loc[1, ["age", "gender", "occupation", "zip"]]) == (
        24,
        "M",
        "technician",
        "85711",
    )
    assert users.loc[8, "zip"] == "05201"  # leading zero kept
    assert users.loc[74, "zip"] == "T8H1N"  # Canadian postcode
    assert set(users["gender"]) == {"M", "F"}
    assert users["occupation"].nunique() == 21
    # Side information is constant per user.
    assert (ml_all.groupby("user_id")[["age", "gender", "occupation", "zip"]].nunique() == 1).all(
        axis=None
    )


def test_parent_folder_is_accepted(ml_path):
    folder = ml_path if (ml_path / "u.data").is_file() else ml_path / "ml-100k"
    if folder.name != "ml-100k":
        pytest.skip("the data folder is not named ml-100k")
    train, test = load_movielens_100k(folder.parent, split="u2")
    assert (len(train), len(test)) == (80000, 20000)


@pytest.mark.parametrize("bad", ["u6", "UA", "", "all"])
def test_bad_split_raises(bad, tmp_path):
    pattern = r"split must be one of 'ua', 'ub', 'u1', 'u2', 'u3', 'u4', 'u5' or None; got"
    with pytest.raises(ValueError, match=pattern) as info:
        load_movielens_100k(tmp_path, split=bad)
    assert repr(bad) in str(info.value)


def test_missing_folder_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_movielens_100k(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="u.data"):
        load_movielens_100k(tmp_path)


def test_no_source_raises_with_instructions(monkeypatch):
    monkeypatch.delenv("BAYESFM_ML100K", raising=False)
    with pytest.raises(FileNotFoundError, match="path=") as info:
        load_movielens_100k()
    message = str(info.value)
    assert "BAYESFM_ML100K" in message
    assert "download=True" in message
    assert "redistribution" in message


# --------------------------------------------------------------------------------------
# A small fake ml-100k: file formats, missing files, download
# --------------------------------------------------------------------------------------

FAKE_USERS = "1|24|M|technician|85711\n2|53|F|other|04043\n3|23|M|writer|T8H1N\n"


def _flags(*names: str) -> str:
    return "|".join("1" if g in names else "0" for g in GENRES)


FAKE_ITEMS = (
    f"1|Toy Story (1995)|01-Jan-1995||http://x/1|{_flags('Animation', 'Comedy')}\n"
    f"2|Caf\xe9 Society (1996)|4-Feb-1996||http://x/2|{_flags('Drama')}\n"
    f"3|unknown||||{_flags('unknown')}\n"
)
FAKE_RATINGS = [
    (1, 1, 5, 874965758),
    (1, 2, 3, 876893171),
    (2, 1, 4, 888550871),
    (2, 3, 1, 888551000),
    (3, 2, 2, 889237455),
    (3, 1, 4, 889237400),
]


def _tsv(rows) -> str:
    return "".join("\t".join(str(v) for v in row) + "\n" for row in rows)


def _fake_files() -> dict[str, bytes]:
    genre = "".join(f"{g}|{i}\n" for i, g in enumerate(GENRES)) + "\n"
    return {
        "u.data": _tsv(FAKE_RATINGS).encode(),
        "u.user": FAKE_USERS.encode(),
        "u.item": FAKE_ITEMS.encode("latin-1"),
        "u.genre": genre.encode(),
        "ua.base": _tsv(FAKE_RATINGS[:4]).encode(),
        "ua.test": _tsv(FAKE_RATINGS[4:]).encode(),
    }


def _write_fake(folder: Path, skip: tuple[str, ...] = ()) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in _fake_files().items():
        if name not in skip:
            (folder / name).write_bytes(content)
    return folder


def _fake_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("ml-100k/", "")
        for name, content in _fake_files().items():
            archive.writestr(f"ml-100k/{name}", content)
    return buffer.getvalue()


def _check_fake_frames(train: pd.DataFrame, test: pd.DataFrame) -> None:
    assert list(train.columns) == COLUMNS
    assert len(train) == 4 and len(test) == 2
    assert train["rating"].tolist() == [5, 3, 4, 1]
    assert test["user_id"].tolist() == [3, 3]
    row = train.iloc[0]
    assert row["genres"] == ("Animation", "Comedy")
    assert row["year"] == 1995.0
    assert (row["age"], row["gender"], row["occupation"], row["zip"]) == (
        24,
        "M",
        "technician",
        "85711",
    )
    assert train.iloc[2]["zip"] == "04043"
    assert train.iloc[3]["genres"] == ("unknown",)
    assert math.isnan(train.iloc[3]["year"])
    assert test.iloc[0]["genres"] == ("Drama",)  # the latin-1 title decodes
    assert test.iloc[0]["year"] == 1996.0
    assert test.iloc[0]["zip"] == "T8H1N"


def test_fake_folder_and_parent(tmp_path):
    _write_fake(tmp_path / "ml-100k")
    _check_fake_frames(*load_movielens_100k(tmp_path / "ml-100k"))
    _check_fake_frames(*load_movielens_100k(tmp_path))


def test_environment_variable_is_used(tmp_path, monkeypatch):
    _write_fake(tmp_path / "data")
    monkeypatch.setenv("BAYESFM_ML100K", str(tmp_path / "data"))
    _check_fake_frames(*load_movielens_100k())
    assert len(load_movielens_100k(split=None)) == len(FAKE_RATINGS)


@pytest.mark.parametrize("missing", ["ua.test", "ua.base", "u.user", "u.item", "u.genre"])
def test_missing_file_is_named(tmp_path, missing):
    _write_fake(tmp_path, skip=(missing,))
    with pytest.raises(FileNotFoundError, match=rf"'{missing}' not found"):
        load_movielens_100k(tmp_path, split="ua")


def test_missing_split_file_is_named(tmp_path):
    _write_fake(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"'u3.base' not found"):
        load_movielens_100k(tmp_path, split="u3")


def test_unknown_user_in_ratings_raises(tmp_path):
    _write_fake(tmp_path)
    (tmp_path / "u.data").write_text(_tsv([*FAKE_RATINGS, (9, 1, 3, 889237400)]))
    with pytest.raises(ValueError, match=r"user_id.*u\.user.*\[9\]"):
        load_movielens_100k(tmp_path, split=None)


@pytest.fixture
def zip_server(monkeypatch):
    """Serve the fake archive at http://127.0.0.1:<port>/ml-100k.zip; count the requests."""
    payload = _fake_zip()
    requests: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # the method name http.server dispatches to
            requests.append(self.path)
            if self.path != "/ml-100k.zip":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/zip")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format, *args):  # silence the request log
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    # Never route the local request through a proxy configured in the environment.
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.delenv("BAYESFM_ML100K", raising=False)
    url = f"http://127.0.0.1:{server.server_address[1]}/ml-100k.zip"
    try:
        yield url, hashlib.sha256(payload).hexdigest(), requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_download_then_reuse_cache(zip_server, tmp_path):
    url, digest, requests = zip_server
    cache = tmp_path / "cache"
    train, test = load_movielens_100k(
        path=None, split="ua", download=True, cache_dir=cache, url=url, sha256=digest
    )
    _check_fake_frames(train, test)
    assert requests == ["/ml-100k.zip"]
    assert [p.name for p in cache.iterdir()] == ["ml-100k"]  # no archive or temp left
    assert (cache / "ml-100k" / "u.data").is_file()

    # A second load reads the cache and does not contact the server.
    again = load_movielens_100k(split=None, download=True, cache_dir=cache, url=url, sha256=digest)
    assert len(again) == len(FAKE_RATINGS)
    assert len(requests) == 1
    assert download_movielens_100k(cache, url=url, sha256=digest) == cache / "ml-100k"
    assert len(requests) == 1


def test_download_with_wrong_digest_leaves_nothing(zip_server, tmp_path):
    url, digest, requests = zip_server
    cache = tmp_path / "cache"
    wrong = "0" * 64
    with pytest.raises(ValueError, match="sha256") as info:
        load_movielens_100k(download=True, cache_dir=cache, url=url, sha256=wrong)
    assert wrong in str(info.value) and digest in str(info.value)
    assert len(requests) == 1
    assert list(cache.iterdir()) == []  # no partial file, no extracted folder


def test_download_without_digest_check(zip_server, tmp_path):
    url, _, requests = zip_server
    folder = download_movielens_100k(tmp_path / "c", url=url, sha256=None)
    assert folder == tmp_path / "c" / "ml-100k"
    _check_fake_frames(*load_movielens_100k(folder))
    assert len(requests) == 1


def test_download_http_error_leaves_nothing(zip_server, tmp_path):
    url, digest, _ = zip_server
    with pytest.raises(OSError, match="404"):
        download_movielens_100k(tmp_path / "c", url=url.replace("ml-100k", "nope"), sha256=None)
    assert list((tmp_path / "c").iterdir()) == []


def test_splits_constant():
    assert ML100K_SPLITS == ("ua", "ub", "u1", "u2", "u3", "u4", "u5")


# --------------------------------------------------------------------------------------
# Synthetic data
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synth():
    return make_synthetic(n_users=60, n_items=40, n_obs=1500, rank=3, noise_sd=0.5, seed=7)


def test_synthetic_reproducible():
    a = make_synthetic(n_users=30, n_items=20, n_obs=300, seed=11)
    b = make_synthetic(n_users=30, n_items=20, n_obs=300, seed=11)
    c = make_synthetic(n_users=30, n_items=20, n_obs=300, seed=12)
    pd.testing.assert_frame_equal(a.X, b.X)
    np.testing.assert_array_equal(a.y, b.y)
    np.testing.assert_array_equal(a.mean, b.mean)
    assert a.params.keys() == b.params.keys()
    for key in a.params:
        np.testing.assert_array_equal(a.params[key], b.params[key])
    assert not a.X.equals(c.X)
    assert not np.array_equal(a.y, c.y)


def test_synthetic_shapes_and_coverage(synth):
    X = synth.X
    assert list(X.columns) == ["user_id", "item_id", "occupation", "age", "genres"]
    assert X.shape == (1500, 5)
    assert synth.y.shape == synth.mean.shape == (1500,)
    assert synth.noise_sd == 0.5
    assert set(X["user_id"]) == {f"u{i:04d}" for i in range(1, 61)}
    assert set(X["item_id"]) == {f"i{i:04d}" for i in range(1, 41)}
    assert not X.duplicated(["user_id", "item_id"]).any()
    for col in ("user_id", "item_id", "occupation"):
        assert pd.api.types.is_string_dtype(X[col])
    assert pd.api.types.is_integer_dtype(X["age"])
    p = synth.params
    assert p["v_user"].shape == (60, 3) and p["v_item"].shape == (40, 3)
    assert p["w_user"].shape == (60,) and p["w_item"].shape == (40,)
    assert p["v_occupation"].shape == (len(p["occupation_levels"]), 3)
    assert p["v_genre"].shape == (len(p["genre_levels"]), 3)
    assert p["v_age"].shape == (3,)


def test_synthetic_side_columns_constant_per_entity(synth):
    X = synth.X
    assert (X.groupby("user_id")[["occupation", "age"]].nunique() == 1).all(axis=None)
    assert (X.groupby("item_id")["genres"].nunique() == 1).all()
    assert X["age"].between(18, 70).all()
    assert set(X["occupation"]) <= set(synth.params["occupation_levels"])
    assert 3 <= X["occupation"].nunique() <= 6
    levels = synth.params["genre_levels"]
    for genres in X["genres"]:
        assert isinstance(genres, tuple)
        assert 1 <= len(genres) <= 3
        assert len(set(genres)) == len(genres)
        assert set(genres) <= set(levels)


def _features(data, row: int) -> list[tuple[float, float, np.ndarray]]:
    """(x_j, w_j, v_j) for every nonzero feature of one row, from params alone."""
    p, r = data.params, data.X.iloc[row]
    u = list(p["user_ids"]).index(r["user_id"])
    i = list(p["item_ids"]).index(r["item_id"])
    feats = [(1.0, p["w_user"][u], p["v_user"][u]), (1.0, p["w_item"][i], p["v_item"][i])]
    if "occupation" in data.X:
        o = p["occupation_levels"].index(r["occupation"])
        feats.append((1.0, p["w_occupation"][o], p["v_occupation"][o]))
        age = (r["age"] - p["age_mean"]) / p["age_sd"]
        feats.append((age, p["w_age"], p["v_age"]))
        for name in r["genres"]:
            g = p["genre_levels"].index(name)
            feats.append((1.0 / len(r["genres"]), p["w_genre"][g], p["v_genre"][g]))
    return feats


def _fm_oracle(data, row: int) -> float:
    """w0 + sum_j x_j w_j + sum_{j<l} x_j x_l <v_j, v_l>, with explicit loops."""
    feats = _features(data, row)
    total = data.params["w0"]
    for x, w, _ in feats:
        total += x * w
    for j in range(len(feats)):
        for m in range(j + 1, len(feats)):
            xj, _, vj = feats[j]
            xm, _, vm = feats[m]
            total += xj * xm * sum(a * b for a, b in zip(vj, vm, strict=True))
    return total


@pytest.mark.parametrize("with_side", [True, False])
def test_synthetic_mean_matches_fm_equation(with_side):
    data = make_synthetic(n_users=25, n_items=20, n_obs=200, rank=4, with_side=with_side, seed=3)
    if not with_side:
        assert list(data.X.columns) == ["user_id", "item_id"]
    rows = np.random.default_rng(0).choice(len(data.X), size=25, replace=False)
    for row in rows:
        assert data.mean[row] == pytest.approx(_fm_oracle(data, int(row)), rel=1e-12, abs=1e-12)


def test_synthetic_interactions_matter(synth):
    # The interaction part (mean minus the linear part) must be of the order of the biases.
    linear = np.array(
        [synth.params["w0"] + sum(x * w for x, w, _ in _features(synth, r)) for r in range(300)]
    )
    interaction_sd = np.std(synth.mean[:300] - linear)
    assert 0.2 < interaction_sd < 0.8


def test_synthetic_noise_sd():
    data = make_synthetic(n_users=100, n_items=80, n_obs=6000, noise_sd=0.7, seed=5)
    resid = data.y - data.mean
    assert abs(resid.mean()) < 0.05
    assert resid.std() == pytest.approx(0.7, abs=0.03)
    assert make_synthetic(n_users=5, n_items=5, n_obs=10, noise_sd=0.0).y.tolist() == (
        make_synthetic(n_users=5, n_items=5, n_obs=10, noise_sd=0.0).mean.tolist()
    )


def test_synthetic_coverage_limits():
    few = make_synthetic(n_users=10, n_items=5, n_obs=7, seed=1)
    assert few.X["user_id"].nunique() == 7
    assert few.X["item_id"].nunique() == 5
    full = make_synthetic(n_users=6, n_items=4, n_obs=24, seed=1, with_side=False)
    assert len(full.X.drop_duplicates()) == 24
    big = make_synthetic(n_users=3000, n_items=2000, n_obs=20000, seed=2, with_side=False)
    assert not big.X.duplicated().any()
    assert big.X["user_id"].nunique() == 3000 and big.X["item_id"].nunique() == 2000


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"n_obs": 21, "n_users": 4, "n_items": 5}, r"n_obs must be at most .* = 20; got 21"),
        ({"n_users": 0}, r"n_users must be an integer >= 1; got 0"),
        ({"rank": -1}, r"rank must be an integer >= 0; got -1"),
        ({"n_items": 2.5}, r"n_items must be an integer >= 1; got 2.5"),
        ({"noise_sd": -0.1}, r"noise_sd must be a finite number >= 0; got -0.1"),
    ],
)
def test_synthetic_bad_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        make_synthetic(**kwargs)


# --------------------------------------------------------------------------------------
# Toy example
# --------------------------------------------------------------------------------------


def test_toy_mf():
    X, y = make_toy_mf()
    assert list(X.columns) == ["user_id", "item_id"]
    assert X["user_id"].tolist() == ["u1", "u1", "u2"]
    assert X["item_id"].tolist() == ["i1", "i2", "i2"]
    assert y.dtype == np.float64
    assert y.tolist() == [2.0, 4.0, 1.0]
