"""Datasets: the MovieLens-100K reader and synthetic data with a planted ground truth.

MovieLens-100K (GroupLens Research) may not be redistributed, so bayesfm never ships it:
:func:`load_movielens_100k` reads a folder that the user supplies (an argument or the
environment variable ``BAYESFM_ML100K``) or, on request, downloads the official archive
into a local cache and checks its SHA-256 digest.

:func:`make_synthetic` draws ratings from a second-order factorization machine whose
parameters are returned with the data, so that tests and examples can check recovery.
:func:`make_toy_mf` returns the three-rating example used in the documentation.

This module depends only on NumPy, pandas and the standard library.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import shutil
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "ML100K_COLUMNS",
    "ML100K_ENV_VAR",
    "ML100K_SHA256",
    "ML100K_SPLITS",
    "ML100K_URL",
    "SyntheticData",
    "download_movielens_100k",
    "load_movielens_100k",
    "make_synthetic",
    "make_toy_mf",
]

#: Where GroupLens publishes the MovieLens-100K archive.
ML100K_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"

#: SHA-256 digest of the official ``ml-100k.zip`` (4,924,029 bytes; GroupLens publishes the
#: MD5 ``0e33842e24a9c977be4e0107933c0723`` beside it). Pass ``sha256=None`` to
#: :func:`download_movielens_100k` or :func:`load_movielens_100k` to skip the check.
ML100K_SHA256 = "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229"

#: Environment variable naming a folder that holds the MovieLens-100K files.
ML100K_ENV_VAR = "BAYESFM_ML100K"

#: The predefined train/test splits shipped with MovieLens-100K.
ML100K_SPLITS: tuple[str, ...] = ("ua", "ub", "u1", "u2", "u3", "u4", "u5")

#: Columns of the frames returned by :func:`load_movielens_100k`, in order.
ML100K_COLUMNS: tuple[str, ...] = (
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
)

_ML100K_DIRNAME = "ml-100k"
_DEFAULT_CACHE_DIR = Path("~/.cache/bayesfm")
_RATING_COLUMNS = ["user_id", "item_id", "rating", "timestamp"]
_USER_COLUMNS = ["user_id", "age", "gender", "occupation", "zip"]
_ITEM_INFO_COLUMNS = ["item_id", "title", "release_date", "video_release_date", "url"]
_YEAR_RE = re.compile(r"(\d{4})\s*$")

PathLike = str | os.PathLike[str]


# --------------------------------------------------------------------------------------
# MovieLens-100K
# --------------------------------------------------------------------------------------


def _has_ml100k(folder: Path) -> bool:
    return (folder / "u.data").is_file()


def _resolve_folder(path: PathLike) -> Path:
    """Return the folder holding ``u.data``: `path` itself or ``path/ml-100k``."""
    folder = Path(path).expanduser()
    if _has_ml100k(folder):
        return folder
    if _has_ml100k(folder / _ML100K_DIRNAME):
        return folder / _ML100K_DIRNAME
    if not folder.exists():
        raise FileNotFoundError(f"MovieLens-100K folder {str(folder)!r} does not exist")
    raise FileNotFoundError(
        f"no MovieLens-100K file 'u.data' in {str(folder)!r} nor in "
        f"{str(folder / _ML100K_DIRNAME)!r}; pass the folder that contains u.data, u.user, "
        "u.item and u.genre (or its parent holding 'ml-100k/')"
    )


def _require_file(folder: Path, name: str) -> Path:
    file = folder / name
    if not file.is_file():
        raise FileNotFoundError(f"MovieLens-100K file {name!r} not found in {str(folder)!r}")
    return file


def _read_ratings(file: Path) -> pd.DataFrame:
    return pd.read_csv(
        file,
        sep="\t",
        header=None,
        names=_RATING_COLUMNS,
        dtype="int64",
        engine="c",
    )


def _read_users(file: Path) -> pd.DataFrame:
    return pd.read_csv(
        file,
        sep="|",
        header=None,
        names=_USER_COLUMNS,
        dtype={"user_id": "int64", "age": "int64", "gender": str, "occupation": str, "zip": str},
        keep_default_na=False,  # zip codes are codes, never missing values
        quoting=csv.QUOTE_NONE,
    )


def _read_genre_names(file: Path) -> list[str]:
    pairs: list[tuple[int, str]] = []
    for line in file.read_text(encoding="latin-1").splitlines():
        line = line.strip()
        if not line:
            continue
        name, sep, index = line.rpartition("|")
        if not sep or not index.strip().isdigit():
            raise ValueError(f"malformed line {line!r} in {str(file)!r}; expected 'name|index'")
        pairs.append((int(index), name))
    pairs.sort()
    if [i for i, _ in pairs] != list(range(len(pairs))):
        raise ValueError(f"genre indices in {str(file)!r} are not 0, 1, ..., {len(pairs) - 1}")
    return [name for _, name in pairs]


def _release_year(date: str) -> float:
    match = _YEAR_RE.search(date)
    return float(match.group(1)) if match else np.nan


def _read_items(file: Path, genre_names: list[str]) -> pd.DataFrame:
    flags = [f"genre_{i}" for i in range(len(genre_names))]
    raw = pd.read_csv(
        file,
        sep="|",
        header=None,
        names=_ITEM_INFO_COLUMNS + flags,
        dtype={"item_id": "int64", "release_date": str, **dict.fromkeys(flags, "int64")},
        encoding="latin-1",
        keep_default_na=False,
        quoting=csv.QUOTE_NONE,
    )
    flag_matrix = raw[flags].to_numpy() != 0
    genres = np.empty(len(raw), dtype=object)
    for row, mask in enumerate(flag_matrix):
        genres[row] = tuple(name for name, on in zip(genre_names, mask, strict=True) if on)
    year = np.array([_release_year(d) for d in raw["release_date"]], dtype="float64")
    return pd.DataFrame({"item_id": raw["item_id"].to_numpy(), "genres": genres, "year": year})


def _join_side(ratings: pd.DataFrame, users: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    for key, table, name in (("user_id", users, "u.user"), ("item_id", items, "u.item")):
        unknown = np.setdiff1d(ratings[key].unique(), table[key].to_numpy())
        if unknown.size:
            raise ValueError(
                f"ratings refer to {unknown.size} {key} value(s) missing from {name}, "
                f"e.g. {unknown[:5].tolist()}"
            )
    out = ratings.merge(users, on="user_id", how="left", validate="many_to_one")
    out = out.merge(items, on="item_id", how="left", validate="many_to_one")
    return out.loc[:, list(ML100K_COLUMNS)].reset_index(drop=True)


def download_movielens_100k(
    dest_dir: PathLike,
    url: str = ML100K_URL,
    sha256: str | None = ML100K_SHA256,
) -> Path:
    """Download and extract the MovieLens-100K archive.

    The archive is written to a temporary file in `dest_dir`, its SHA-256 digest is checked,
    and it is extracted into a temporary folder that is then renamed to ``dest_dir/ml-100k``.
    Whatever happens, no partial archive or folder is left behind. If ``dest_dir/ml-100k``
    already holds ``u.data``, nothing is downloaded.

    Parameters
    ----------
    dest_dir : str or os.PathLike
        Folder in which ``ml-100k/`` is created (created itself if needed).
    url : str, default ML100K_URL
        Where to download the zip archive from.
    sha256 : str or None, default ML100K_SHA256
        Expected SHA-256 hex digest of the archive; ``None`` skips the check.

    Returns
    -------
    pathlib.Path
        The folder ``dest_dir/ml-100k`` that contains ``u.data`` and the other files.

    Raises
    ------
    ValueError
        If the digest of the downloaded archive differs from `sha256` (the file is deleted),
        or the archive does not contain ``u.data``.
    urllib.error.URLError
        If the download fails.

    Notes
    -----
    The MovieLens license forbids redistributing the data; keep the downloaded copy local.

    Examples
    --------
    >>> from bayesfm.datasets import download_movielens_100k, load_movielens_100k
    >>> folder = download_movielens_100k("~/data")  # doctest: +SKIP
    >>> train, test = load_movielens_100k(folder, split="ua")  # doctest: +SKIP
    """
    dest = Path(dest_dir).expanduser()
    target = dest / _ML100K_DIRNAME
    if _has_ml100k(target):
        return target
    dest.mkdir(parents=True, exist_ok=True)

    fd, tmp_name = tempfile.mkstemp(dir=dest, prefix=".ml-100k-", suffix=".zip.part")
    tmp_zip = Path(tmp_name)
    tmp_dir: Path | None = None
    try:
        hasher = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            while chunk := response.read(1 << 16):
                out.write(chunk)
                hasher.update(chunk)
        actual = hasher.hexdigest()
        if sha256 is not None and actual.lower() != sha256.strip().lower():
            raise ValueError(
                f"sha256 mismatch for {url!r}: expected {sha256}, got {actual}; "
                "the downloaded file was deleted"
            )

        tmp_dir = Path(tempfile.mkdtemp(dir=dest, prefix=".ml-100k-extract-"))
        with zipfile.ZipFile(tmp_zip) as archive:
            root = tmp_dir.resolve()
            for member in archive.namelist():
                if not (tmp_dir / member).resolve().is_relative_to(root):
                    raise ValueError(f"archive member {member!r} would escape {str(dest)!r}")
            archive.extractall(tmp_dir)
        if _has_ml100k(tmp_dir / _ML100K_DIRNAME):
            extracted = tmp_dir / _ML100K_DIRNAME
        elif _has_ml100k(tmp_dir):
            extracted = tmp_dir
        else:
            raise ValueError(f"the archive from {url!r} contains no 'ml-100k/u.data'")

        try:
            os.replace(extracted, target)
        except OSError:
            # Another process may have finished the same download first.
            if not _has_ml100k(target):
                raise
        return target
    finally:
        tmp_zip.unlink(missing_ok=True)
        if tmp_dir is not None:
            shutil.rmtree(tmp_dir, ignore_errors=True)


def load_movielens_100k(
    path: PathLike | None = None,
    split: str | None = "ua",
    *,
    download: bool = False,
    cache_dir: PathLike | None = None,
    url: str = ML100K_URL,
    sha256: str | None = ML100K_SHA256,
) -> tuple[pd.DataFrame, pd.DataFrame] | pd.DataFrame:
    """Load MovieLens-100K ratings joined with user and item side information.

    Parameters
    ----------
    path : str, os.PathLike or None, default None
        The GroupLens ``ml-100k`` folder (the one holding ``u.data``) or its parent. If
        ``None``, the folder named by the environment variable ``BAYESFM_ML100K`` is used;
        if that is unset and `download` is true, the data are downloaded into `cache_dir`
        (once: later calls reuse the copy there).
    split : {"ua", "ub", "u1", "u2", "u3", "u4", "u5"} or None, default "ua"
        Which predefined split to return. ``"ua"`` and ``"ub"`` hold out exactly 10 ratings
        per user (90,570 / 9,430 rows); ``"u1"`` to ``"u5"`` are the five folds of an 80/20
        cross-validation. ``None`` returns all 100,000 ratings of ``u.data``.
    download : bool, default False
        Whether to download the data when neither `path` nor ``BAYESFM_ML100K`` is given.
    cache_dir : str, os.PathLike or None, default None
        Where downloaded data are kept; ``None`` means ``~/.cache/bayesfm``.
    url : str, default ML100K_URL
        Download location of the zip archive.
    sha256 : str or None, default ML100K_SHA256
        Expected SHA-256 digest of the archive; ``None`` skips the check.

    Returns
    -------
    (train, test) : tuple of pandas.DataFrame
        When `split` is given.
    ratings : pandas.DataFrame
        When `split` is ``None``.

        Each frame has one row per rating, in file order, with columns

        - ``user_id``, ``item_id`` (int): the original MovieLens ids;
        - ``rating`` (int, 1 to 5) and ``timestamp`` (int, Unix seconds);
        - ``age`` (int), ``gender`` (``"M"``/``"F"``), ``occupation`` and ``zip`` (strings;
          some zip codes are Canadian and contain letters) from ``u.user``;
        - ``genres``: a tuple of genre names in ``u.genre`` order (an item flagged only
          "unknown" gets ``("unknown",)``);
        - ``year`` (float): the release year, NaN when the release date is missing (one
          item, id 267, has none).

    Raises
    ------
    ValueError
        If `split` is not one of the allowed values, or the files are inconsistent.
    FileNotFoundError
        If no data folder is found or a needed file is missing from it.

    Notes
    -----
    MovieLens-100K is provided by GroupLens Research (https://grouplens.org/datasets/movielens/)
    under a license that forbids redistribution; bayesfm does not ship it.

    Examples
    --------
    >>> from bayesfm.datasets import load_movielens_100k
    >>> train, test = load_movielens_100k("data/ml-100k", split="ua")  # doctest: +SKIP
    >>> ratings = load_movielens_100k(split=None, download=True)  # doctest: +SKIP
    """
    if split is not None and split not in ML100K_SPLITS:
        allowed = ", ".join(repr(s) for s in ML100K_SPLITS)
        raise ValueError(f"split must be one of {allowed} or None; got {split!r}")

    if path is not None:
        folder = _resolve_folder(path)
    elif os.environ.get(ML100K_ENV_VAR):
        folder = _resolve_folder(os.environ[ML100K_ENV_VAR])
    elif download:
        cache = Path(cache_dir if cache_dir is not None else _DEFAULT_CACHE_DIR).expanduser()
        folder = download_movielens_100k(cache, url=url, sha256=sha256)
    else:
        raise FileNotFoundError(
            "MovieLens-100K data not found: pass path=<folder holding u.data>, set the "
            f"environment variable {ML100K_ENV_VAR} to that folder, or call with "
            "download=True to fetch it from GroupLens into cache_dir (default "
            f"{str(_DEFAULT_CACHE_DIR)!r}). bayesfm does not ship the data because its "
            "license forbids redistribution."
        )

    rating_files = ["u.data"] if split is None else [f"{split}.base", f"{split}.test"]
    files = [_require_file(folder, name) for name in rating_files]
    users = _read_users(_require_file(folder, "u.user"))
    genre_names = _read_genre_names(_require_file(folder, "u.genre"))
    items = _read_items(_require_file(folder, "u.item"), genre_names)

    frames = [_join_side(_read_ratings(f), users, items) for f in files]
    if split is None:
        return frames[0]
    return frames[0], frames[1]


# --------------------------------------------------------------------------------------
# Synthetic data
# --------------------------------------------------------------------------------------

_OCCUPATIONS = ("student", "engineer", "artist", "educator", "retired")
_GENRES = ("Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi")


@dataclass(frozen=True)
class SyntheticData:
    """Ratings drawn from a planted factorization machine.

    Parameters
    ----------
    X : pandas.DataFrame
        Features, one row per observation: ``user_id``, ``item_id`` and, with side
        information, ``occupation``, ``age`` and ``genres``.
    y : numpy.ndarray
        Observed targets, ``mean`` plus Gaussian noise.
    mean : numpy.ndarray
        Noise-free FM prediction for each row.
    params : dict
        The planted parameters; see :func:`make_synthetic`.
    noise_sd : float
        Standard deviation of the observation noise.

    Examples
    --------
    >>> import bayesfm as bfm
    >>> data = bfm.datasets.make_synthetic(n_users=20, n_items=15, n_obs=300, seed=0)
    >>> data.X.columns.tolist()
    ['user_id', 'item_id', 'occupation', 'age', 'genres']
    >>> data.y.shape, data.noise_sd
    ((300,), 0.5)
    """

    X: pd.DataFrame
    y: np.ndarray
    mean: np.ndarray
    params: dict[str, Any] = field(repr=False)
    noise_sd: float


def _check_int(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def _entity_ids(prefix: str, n: int) -> np.ndarray:
    width = max(4, len(str(n)))
    return np.array([f"{prefix}{i + 1:0{width}d}" for i in range(n)], dtype=object)


def _draw_pairs(
    rng: np.random.Generator, n_users: int, n_items: int, n_obs: int
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (user, item) cells covering every user and item when n_obs allows."""
    total = n_users * n_items
    m = max(n_users, n_items)
    k = np.arange(m)
    # Walk both shuffled id lists in step: distinct cells that cover every user and item.
    cover = rng.permutation(n_users)[k % n_users] * n_items + rng.permutation(n_items)[k % n_items]
    if n_obs <= m:
        cells = cover[:n_obs]
    else:
        need = n_obs - m
        if total <= 4_000_000 or need > total // 4:
            free = np.ones(total, dtype=bool)
            free[cover] = False
            extra = rng.choice(np.flatnonzero(free), size=need, replace=False)
        else:  # sparse: rejection sampling avoids a mask over the whole grid
            taken = set(cover.tolist())
            picked: list[int] = []
            while len(picked) < need:
                for c in rng.integers(0, total, size=2 * (need - len(picked))).tolist():
                    if c not in taken:
                        taken.add(c)
                        picked.append(c)
                        if len(picked) == need:
                            break
            extra = np.array(picked, dtype=np.int64)
        cells = np.concatenate([cover, extra])
    cells = cells[rng.permutation(cells.size)]
    return cells // n_items, cells % n_items


def make_synthetic(
    n_users: int = 200,
    n_items: int = 150,
    n_obs: int = 5000,
    rank: int = 3,
    noise_sd: float = 0.5,
    with_side: bool = True,
    seed: int | None = 0,
) -> SyntheticData:
    r"""Draw ratings from a planted second-order factorization machine.

    Each row is a distinct (user, item) cell; when ``n_obs >= max(n_users, n_items)`` every
    user and every item appears at least once. With side information, each user has an
    ``occupation`` (one of 5 levels) and an ``age`` (an integer 18 to 70), and each item has
    ``genres`` (a tuple of 1 to 3 of 6 genre names); these are constant per entity.

    The mean of a row with features :math:`x_j` (one-hot ids and occupation; standardized
    age; genres weighted :math:`1/n_\text{genres}` each) is the FM equation

    .. math::

        \mu = w_0 + \sum_j w_j x_j
              + \tfrac12 \sum_{f=1}^{k} \Big[\big(\sum_j x_j v_{jf}\big)^2
                                            - \sum_j x_j^2 v_{jf}^2\Big],

    and ``y = mean + Normal(0, noise_sd**2)``. Linear weights are drawn with standard
    deviation 0.3 (ids) or 0.2 (side fields); latent entries with a common standard
    deviation ``params["sd_v"]`` chosen so that the interaction term has a standard
    deviation of about 0.4.

    Parameters
    ----------
    n_users, n_items : int, default 200, 150
        Numbers of users and items.
    n_obs : int, default 5000
        Number of rows, at most ``n_users * n_items``.
    rank : int, default 3
        Dimension of the latent vectors (0 gives a purely linear model).
    noise_sd : float, default 0.5
        Standard deviation of the Gaussian observation noise.
    with_side : bool, default True
        Whether to add the user fields ``occupation``, ``age`` and the item field ``genres``.
    seed : int or None, default 0
        Seed of the :class:`numpy.random.Generator`; the same seed gives the same data.

    Returns
    -------
    SyntheticData
        ``X``, ``y``, ``mean``, ``noise_sd`` and ``params``, a dict with

        - ``"w0"`` (float), ``"w_user"`` (n_users,), ``"w_item"`` (n_items,),
          ``"v_user"`` (n_users, rank), ``"v_item"`` (n_items, rank), ``"sd_v"``;
        - ``"user_ids"``, ``"item_ids"``: the ids whose positions index those arrays;
        - with side information: ``"occupation_levels"``, ``"w_occupation"`` (5,),
          ``"v_occupation"`` (5, rank), ``"w_age"`` (float), ``"v_age"`` (rank,),
          ``"age_mean"``, ``"age_sd"`` (age is standardized with the mean and standard
          deviation over users), ``"genre_levels"``, ``"w_genre"`` (6,), ``"v_genre"``
          (6, rank).

    Raises
    ------
    ValueError
        If a size is not a valid integer, ``n_obs > n_users * n_items``, or ``noise_sd < 0``.

    Examples
    --------
    >>> from bayesfm.datasets import make_synthetic
    >>> data = make_synthetic(n_users=50, n_items=40, n_obs=500, seed=1)
    >>> data.X.shape, data.y.shape
    ((500, 5), (500,))
    """
    n_users = _check_int("n_users", n_users, 1)
    n_items = _check_int("n_items", n_items, 1)
    n_obs = _check_int("n_obs", n_obs, 1)
    rank = _check_int("rank", rank, 0)
    if n_obs > n_users * n_items:
        raise ValueError(
            f"n_obs must be at most n_users * n_items = {n_users * n_items}; got {n_obs}"
        )
    try:
        valid_sd = bool(np.isfinite(noise_sd)) and noise_sd >= 0
    except TypeError:
        valid_sd = False
    if not valid_sd:
        raise ValueError(f"noise_sd must be a finite number >= 0; got {noise_sd!r}")
    noise_sd = float(noise_sd)
    rng = np.random.default_rng(seed)

    user_ids = _entity_ids("u", n_users)
    item_ids = _entity_ids("i", n_items)
    users, items = _draw_pairs(rng, n_users, n_items, n_obs)

    n_field_pairs = 10 if with_side else 1  # pairs of fields that interact
    sd_v = (0.4**2 / (rank * n_field_pairs)) ** 0.25 if rank else 0.0
    w0 = 3.5
    w_user = rng.normal(0.0, 0.3, n_users)
    w_item = rng.normal(0.0, 0.3, n_items)
    v_user = rng.normal(0.0, sd_v, (n_users, rank))
    v_item = rng.normal(0.0, sd_v, (n_items, rank))
    params: dict[str, Any] = {
        "w0": w0,
        "w_user": w_user,
        "w_item": w_item,
        "v_user": v_user,
        "v_item": v_item,
        "sd_v": sd_v,
        "user_ids": user_ids,
        "item_ids": item_ids,
    }

    # Per-row linear term, sum of latent vectors (s) and sum of squared ones (q).
    linear = w_user[users] + w_item[items]
    s = v_user[users] + v_item[items]
    q = v_user[users] ** 2 + v_item[items] ** 2
    columns: dict[str, Any] = {"user_id": user_ids[users], "item_id": item_ids[items]}

    if with_side:
        n_occ, n_gen = len(_OCCUPATIONS), len(_GENRES)
        user_occ = rng.integers(0, n_occ, n_users)
        user_age = rng.integers(18, 71, n_users)
        age_mean = float(user_age.mean())
        age_sd = float(user_age.std()) or 1.0
        age_std = (user_age - age_mean) / age_sd
        # Item-by-genre weights 1/n_genres on the item's genres.
        genre_weight = np.zeros((n_items, n_gen))
        item_genres = np.empty(n_items, dtype=object)
        for i in range(n_items):
            chosen = np.sort(rng.choice(n_gen, size=rng.integers(1, 4), replace=False))
            genre_weight[i, chosen] = 1.0 / chosen.size
            item_genres[i] = tuple(_GENRES[g] for g in chosen)

        w_occupation = rng.normal(0.0, 0.2, n_occ)
        v_occupation = rng.normal(0.0, sd_v, (n_occ, rank))
        w_age = float(rng.normal(0.0, 0.2))
        v_age = rng.normal(0.0, sd_v, rank)
        w_genre = rng.normal(0.0, 0.2, n_gen)
        v_genre = rng.normal(0.0, sd_v, (n_gen, rank))
        params.update(
            occupation_levels=list(_OCCUPATIONS),
            w_occupation=w_occupation,
            v_occupation=v_occupation,
            w_age=w_age,
            v_age=v_age,
            age_mean=age_mean,
            age_sd=age_sd,
            genre_levels=list(_GENRES),
            w_genre=w_genre,
            v_genre=v_genre,
        )

        occ, a = user_occ[users], age_std[users]
        g = genre_weight[items]
        linear = linear + w_occupation[occ] + w_age * a + g @ w_genre
        s = s + v_occupation[occ] + a[:, None] * v_age + g @ v_genre
        q = q + v_occupation[occ] ** 2 + (a**2)[:, None] * v_age**2 + (g**2) @ v_genre**2
        columns.update(
            occupation=np.asarray(_OCCUPATIONS, dtype=object)[user_occ[users]],
            age=user_age[users].astype("int64"),
            genres=item_genres[items],
        )

    mean = w0 + linear + 0.5 * (s**2 - q).sum(axis=1)
    y = mean + rng.normal(0.0, noise_sd, n_obs) if noise_sd > 0 else mean.copy()

    X = pd.DataFrame(
        {
            name: (
                pd.Series(col, dtype=str)
                if name in ("user_id", "item_id", "occupation")
                else pd.Series(col)
            )
            for name, col in columns.items()
        }
    )
    return SyntheticData(X=X, y=y, mean=mean, params=params, noise_sd=noise_sd)


def make_toy_mf() -> tuple[pd.DataFrame, np.ndarray]:
    """Return the three-rating toy example of matrix factorization.

    Two users rate two items: ``u1`` gives ``i1`` a 2 and ``i2`` a 4, ``u2`` gives ``i2`` a 1;
    the cell (``u2``, ``i1``) is unobserved.

    Returns
    -------
    X : pandas.DataFrame
        Columns ``user_id`` and ``item_id`` (strings).
    y : numpy.ndarray
        The ratings ``[2.0, 4.0, 1.0]`` (float64).

    Examples
    --------
    >>> from bayesfm.datasets import make_toy_mf
    >>> X, y = make_toy_mf()
    >>> X.assign(rating=y)
      user_id item_id  rating
    0      u1      i1     2.0
    1      u1      i2     4.0
    2      u2      i2     1.0
    """
    X = pd.DataFrame(
        {
            "user_id": pd.Series(["u1", "u1", "u2"], dtype=str),
            "item_id": pd.Series(["i1", "i2", "i2"], dtype=str),
        }
    )
    y = np.array([2.0, 4.0, 1.0])
    return X, y
