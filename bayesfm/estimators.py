"""scikit-learn style estimators: :class:`BayesianFM` and :class:`BayesianMF`."""

from __future__ import annotations

import copy
import inspect
import os
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import xarray as xr
from jax.flatten_util import ravel_pytree
from scipy.stats import norm

from . import idata as idata_mod
from . import persistence, sharding
from . import recommend as recommend_mod
from ._version import __version__
from .data import ROW, Categorical, Encoded, FeatureSpec, FittedEncoder
from .diagnostics import diagnose, probe_labels, probe_table, warn_if_failed
from .fm import (
    LINKS,
    TASKS,
    ModelSpec,
    constrain,
    entity_owners,
    fm_model,
    initial_values,
    owned_sums,
)
from .gibbs import FMGibbs, gibbs_plan, unroll_entity_draws
from .inference import (
    GibbsConfig,
    InferenceConfig,
    NUTSConfig,
    SVIConfig,
    config_from_dict,
    config_to_dict,
    fit_svi,
    resolve_inference,
    run_gibbs,
    run_nuts,
    run_svi,
    to_jax,
)
from .minibatch import RowBatches, run_minibatch_svi
from .predict import PredictiveEngine
from .priors import PriorConfig

__all__ = ["BayesianFM", "BayesianMF", "NotFittedError"]

COLD_START = ("prior", "error")
# above this, fit refuses store_pointwise=True up front instead of running out of memory late
POINTWISE_LIMIT_BYTES = 4 * 2**30


class NotFittedError(ValueError, AttributeError):
    """Raised when a method that needs a fitted model is called before ``fit``.

    It subclasses both ``ValueError`` and ``AttributeError``, as scikit-learn's does.

    Examples
    --------
    >>> import bayesfm as bfm
    >>> import pandas as pd
    >>> rows = pd.DataFrame({"user_id": ["u1"], "item_id": ["i1"]})
    >>> try:
    ...     bfm.BayesianMF().predict(rows)
    ... except bfm.NotFittedError as err:
    ...     print(err)
    This BayesianMF instance is not fitted yet; call fit(X, y) before predicting
    """


class BayesianFM:
    """Bayesian factorization machine with hierarchical priors, fitted by NUTS, SVI or Gibbs.

    Parameters
    ----------
    rank : int
        Number of latent factors (>= 1).
    features : FeatureSpec or list of fields
        How the columns of ``X`` become features; each field is one hyperprior group.
    task : {"regression", "binary", "ordinal"}
        Gaussian likelihood, probit/logit for 0/1 labels, or ordered probit for ordered
        classes such as star ratings.
    link : {"probit", "logit"}
        Link of the binary task.
    inference : {"nuts", "svi", "gibbs"} or NUTSConfig or SVIConfig or GibbsConfig
        Inference method and its settings.
    prior : PriorConfig, optional
        Hierarchical prior settings (``PriorConfig()`` when None).
    cold_start : {"prior", "error"}
        Unseen ids at predict time are drawn from their group's prior (``"prior"``), or
        raise a ``ValueError`` (``"error"``).
    chunk_size : int
        Rows evaluated together at predict time; bounds memory.
    random_state : int
        Seed of inference and of predictive draws.
    progress_bar : bool or None
        Show progress bars; ``None`` keeps the inference config's setting.
    store_factors : bool
        Keep the latent-factor draws in ``idata_.posterior``. They are the bulk of a large
        posterior and are identified only up to rotation; without them ``idata_`` stays
        small, while predictions (and :meth:`save`) still use the estimator's own copy.
    store_pointwise : bool
        Store the pointwise ``log_likelihood`` and ``posterior_predictive`` of every training
        row (``draws x rows`` each), needed for LOO and the posterior predictive check.
    data_devices : int, "all" or None
        Split the training rows over this many devices (data parallelism through
        ``jax.sharding``; see :mod:`bayesfm.sharding`). ``None`` keeps them on one device.
        Applies to NUTS, Gibbs and full-batch SVI; chains then run vectorized or in sequence.

    Examples
    --------
    A tiny model on synthetic ratings with item genres, fitted by SVI:

    >>> import bayesfm as bfm
    >>> data = bfm.datasets.make_synthetic(n_users=20, n_items=15, n_obs=300, seed=0)
    >>> spec = bfm.FeatureSpec([bfm.Categorical("user_id"), bfm.Categorical("item_id"),
    ...                         bfm.MultiHot("genres", owner="item_id")])
    >>> model = bfm.BayesianFM(rank=2, features=spec, progress_bar=False,
    ...                        inference=bfm.SVIConfig(num_steps=200, num_samples=50))
    >>> model = model.fit(data.X, data.y)
    >>> model.predict_interval(data.X.head(3), prob=0.9).shape
    (3, 3)
    >>> model.idata_.posterior.sizes["chain"], model.idata_.posterior.sizes["draw"]
    (1, 50)
    """

    def __init__(
        self,
        rank: int = 8,
        features: FeatureSpec | list | None = None,
        task: str = "regression",
        link: str = "probit",
        inference: str | InferenceConfig = "nuts",
        prior: PriorConfig | None = None,
        cold_start: str = "prior",
        chunk_size: int = 4096,
        random_state: int = 0,
        progress_bar: bool | None = None,
        store_factors: bool = True,
        store_pointwise: bool = True,
        data_devices: int | str | None = None,
    ) -> None:
        self.rank = rank
        self.features = features
        self.task = task
        self.link = link
        self.inference = inference
        self.prior = prior
        self.cold_start = cold_start
        self.chunk_size = chunk_size
        self.random_state = random_state
        self.progress_bar = progress_bar
        self.store_factors = store_factors
        self.store_pointwise = store_pointwise
        self.data_devices = data_devices

    # ------------------------------------------------------------------ sklearn protocol
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self"]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Constructor parameters, as stored (scikit-learn convention).

        Parameters
        ----------
        deep : bool
            Accepted for scikit-learn compatibility; there are no nested estimators.

        Returns
        -------
        dict
            Parameter names to values, in the order of the constructor's signature.

        Examples
        --------
        >>> import bayesfm as bfm
        >>> params = bfm.BayesianMF(rank=4, inference="gibbs").get_params()
        >>> params["rank"], params["inference"], params["user"]
        (4, 'gibbs', 'user_id')
        """
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> BayesianFM:
        """Set constructor parameters; returns self.

        Parameters
        ----------
        **params
            Constructor parameters and their new values. They take effect at the next
            :meth:`fit` (or prediction, for ``chunk_size`` and ``cold_start``).

        Returns
        -------
        BayesianFM
            The estimator itself.

        Raises
        ------
        ValueError
            A name is not a constructor parameter.

        Examples
        --------
        >>> import bayesfm as bfm
        >>> model = bfm.BayesianMF(rank=4).set_params(rank=8, random_state=1)
        >>> model.rank, model.random_state
        (8, 1)
        """
        valid = self._param_names()
        for key, value in params.items():
            if key not in valid:
                raise ValueError(f"set_params: unknown parameter {key!r}; allowed {valid}")
            setattr(self, key, value)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # ------------------------------------------------------------------------ validation
    def _feature_spec(self) -> FeatureSpec:
        if isinstance(self.features, FeatureSpec):
            return self.features
        if isinstance(self.features, list | tuple):
            return FeatureSpec(self.features)
        raise TypeError(
            f"features: got {self.features!r}; expected a FeatureSpec or a list of fields"
        )

    def _validated_settings(self):
        rank = self.rank
        if not isinstance(rank, int | np.integer) or isinstance(rank, bool) or rank < 1:
            raise ValueError(f"rank: got {rank!r}; must be an integer >= 1")
        if self.task not in TASKS:
            raise ValueError(f"task: got {self.task!r}; allowed are {list(TASKS)}")
        if self.link not in LINKS:
            raise ValueError(f"link: got {self.link!r}; allowed are {list(LINKS)}")
        if self.cold_start not in COLD_START:
            raise ValueError(f"cold_start: got {self.cold_start!r}; allowed {list(COLD_START)}")
        if not isinstance(self.chunk_size, int) or self.chunk_size < 1:
            raise ValueError(f"chunk_size: got {self.chunk_size!r}; must be an integer >= 1")
        for name in ("store_factors", "store_pointwise"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name}: got {getattr(self, name)!r}; must be True or False")
        cfg = resolve_inference(self.inference)
        if self.progress_bar is not None:
            cfg = replace(cfg, progress_bar=bool(self.progress_bar))
        prior = self.prior if self.prior is not None else PriorConfig()
        if not isinstance(prior, PriorConfig):
            raise TypeError(f"prior: got {type(prior).__name__}; expected a PriorConfig")
        if prior.parametrization == "entity" and isinstance(cfg, SVIConfig) and cfg.minibatch:
            raise ValueError(
                "prior.parametrization: got 'entity' with minibatch SVI (batch_size="
                f"{cfg.batch_size}, holdout={cfg.holdout}); minibatch SVI supports "
                "'centered' and 'noncentered'"
            )
        return int(rank), self._feature_spec(), cfg, prior

    def _validated_target(self, y: Any, n_rows: int) -> np.ndarray:
        if y is None:
            raise ValueError("y: got None; fit needs the observed targets")
        arr = np.asarray(y)
        if arr.ndim != 1:
            arr = arr.reshape(-1) if arr.ndim == 2 and 1 in arr.shape else arr
        if arr.ndim != 1:
            raise ValueError(f"y: got an array of shape {np.shape(y)}; expected one dimension")
        if len(arr) != n_rows:
            raise ValueError(
                f"y: got {len(arr)} values but X has {n_rows} rows; they must have the same length"
            )
        if not np.issubdtype(arr.dtype, np.number) and arr.dtype != bool:
            try:
                arr = arr.astype(np.float64)
            except (TypeError, ValueError):
                raise TypeError(
                    f"y: got non-numeric values (dtype {arr.dtype}); expected numbers"
                ) from None
        arr = arr.astype(np.float64)
        bad = ~np.isfinite(arr)
        if bad.any():
            raise ValueError(
                f"y: contains NaN or inf at position(s) {np.flatnonzero(bad)[:5].tolist()} "
                f"(e.g. {arr[bad][0]!r}); all targets must be finite"
            )
        if self.task == "binary":
            vals = np.unique(arr)
            if not np.isin(vals, [0.0, 1.0]).all():
                raise ValueError(
                    f"y: binary task got labels {vals[~np.isin(vals, [0.0, 1.0])][:5].tolist()}; "
                    "allowed labels are 0 and 1"
                )
        return arr

    def _check_fitted(self) -> None:
        if not hasattr(self, "draws_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet; call fit(X, y) before "
                "predicting"
            )

    # ------------------------------------------------------------------------- fitting
    def _model_spec(self, encoder: FittedEncoder, rank: int, prior: PriorConfig, n_classes: int):
        return ModelSpec(
            structure=encoder.structure,
            rank=rank,
            task=self.task,
            link=self.link,
            n_classes=n_classes,
            prior=prior,
        )

    def fit(self, X: pd.DataFrame, y: Any) -> BayesianFM:
        """Fit the posterior on a table ``X`` and targets ``y``; returns self.

        MCMC fits (NUTS, Gibbs) are checked on identified quantities afterwards and warn
        once with a :class:`~bayesfm.diagnostics.ConvergenceWarning` when a check fails.

        Parameters
        ----------
        X : pandas.DataFrame
            Holds every column the feature spec reads.
        y : array-like
            Ratings (regression), 0/1 labels (binary) or ordered classes (ordinal).

        Returns
        -------
        BayesianFM
            The estimator itself, with the fitted attributes (``idata_``, ``encoder_``,
            ``spec_``, ``draws_``, ...) set.

        Raises
        ------
        ValueError
            Invalid settings (rank, task, link, ...), columns missing from ``X``, ``y`` of
            the wrong length or with NaN/inf values, or labels the task does not allow.
        TypeError
            ``features`` or ``prior`` of the wrong type, or non-numeric ``y``.

        Examples
        --------
        >>> import bayesfm as bfm
        >>> data = bfm.datasets.make_synthetic(n_users=20, n_items=15, n_obs=300, seed=0)
        >>> spec = bfm.FeatureSpec([bfm.Categorical("user_id"), bfm.Categorical("item_id"),
        ...                         bfm.MultiHot("genres", owner="item_id")])
        >>> model = bfm.BayesianFM(rank=2, features=spec, progress_bar=False,
        ...                        inference=bfm.SVIConfig(num_steps=200, num_samples=50))
        >>> model.fit(data.X, data.y) is model
        True
        >>> model.n_train_
        300
        """
        rank, fspec, cfg, prior = self._validated_settings()
        FittedEncoder.check_table(X, fspec.columns)
        y_arr = self._validated_target(y, len(X))
        encoder = FittedEncoder.fit(fspec, X)
        encoded = encoder.transform(X)
        classes = None
        if self.task == "ordinal":
            classes = np.unique(y_arr)
            if len(classes) < 2:
                raise ValueError(f"y: ordinal task needs >= 2 classes; got {classes.tolist()}")
            y_model = np.searchsorted(classes, y_arr).astype(np.int32)
            offset = 0.0
        elif self.task == "binary":
            y_model = y_arr.astype(np.int32)
            offset = float(norm.ppf(np.clip(y_arr.mean(), 0.01, 0.99)))
            if self.link == "logit":
                offset = float(np.log(np.clip(y_arr.mean(), 0.01, 0.99) / (1 - y_arr.mean())))
        else:
            y_model = y_arr.astype(np.float32)
            offset = float(y_arr.mean())
        spec = self._model_spec(encoder, rank, prior, 0 if classes is None else len(classes))
        if isinstance(cfg, GibbsConfig) and self.task == "binary" and self.link != "probit":
            raise ValueError(
                f"link: got {self.link!r}; the Gibbs sampler needs link='probit' for the "
                "binary task (its data augmentation is the probit's). Use inference='nuts' "
                "or 'svi' for the logit link"
            )
        self._check_pointwise_size(cfg, len(X))
        n_dev = self._check_devices(cfg)
        key = jax.random.PRNGKey(self.random_state)
        if isinstance(cfg, SVIConfig) and cfg.minibatch:
            # rows stay on the host; only batches and entity-owned features reach the device
            owned = {t.dim for t in spec.structure.terms if t.carrier != ROW}
            terms = encoded.arrays(term_pad=True)["terms"]
            draws = run_minibatch_svi(
                spec,
                RowBatches.from_encoded(encoded, spec, y_model),
                {d: a for d, a in terms.items() if d in owned},
                offset,
                cfg,
                key,
                partial(complete_samples, spec, unconstrained=True),
                initial_values(spec, jax.random.fold_in(key, 1)),
                seed=self.random_state,
            )
        else:
            draws = self._run_full_batch(spec, encoded, offset, y_model, cfg, key, n_dev)
        # fill a copy, so that a failure below leaves a previously fitted state intact
        fitted = copy.copy(self)
        fitted.__dict__.pop("_seen_cache", None)
        fitted.encoder_ = encoder
        fitted.spec_ = spec
        fitted.inference_ = cfg
        fitted.offset_ = offset
        fitted.classes_ = classes
        fitted.n_train_ = len(X)
        fitted.draws_ = draws
        fitted.timings_ = dict(draws.timings)
        fitted.probe_ = probe_table(X, encoder, seed=self.random_state)
        fitted.idata_ = fitted._inference_data(X, y_arr, encoded)
        fitted.draws_ = replace(draws, latent=None)  # in the InferenceData now
        diagnostics = None
        if draws.method != "svi":
            diagnostics = diagnose(fitted)
        self.__dict__.update(fitted.__dict__)
        if diagnostics is not None:
            warn_if_failed(diagnostics, draws.method)
        return self

    def _run_full_batch(self, spec, encoded, offset, y_model, cfg, key, n_dev):
        """NUTS, Gibbs or full-batch SVI on the whole encoded table (held on the device(s))."""
        arrays, mesh = encoded.arrays(), None
        if n_dev > 1:
            arrays, y_model = sharding.pad_rows(arrays, y_model, n_dev)
            mesh = sharding.row_mesh(n_dev)
        if isinstance(cfg, GibbsConfig):
            arrays["gibbs"] = gibbs_plan(arrays, spec.structure, n_shards=n_dev)
        data, y = to_jax(arrays), jnp.asarray(y_model)
        if mesh is not None:
            data = sharding.place(data, mesh, sharding.is_training_row_array)
            y = sharding.place(y, mesh, lambda keys: True)
        args = (data, jnp.float32(offset), y)
        if mesh is not None and isinstance(cfg, NUTSConfig) and cfg.chain_method == "auto":
            # the devices hold the rows: chains go in one vectorized program or in sequence
            cpu = jax.default_backend() == "cpu"
            cfg = replace(cfg, chain_method="sequential" if cpu else "vectorized")
        if isinstance(cfg, SVIConfig):
            post = partial(complete_samples, spec, unconstrained=True, data=data)
            init_values = initial_values(spec, jax.random.fold_in(key, 1))
            return run_svi(partial(fm_model, spec=spec), args, cfg, key, post, init_values)
        if isinstance(cfg, GibbsConfig):
            sweeps = cfg.num_warmup + cfg.num_samples * cfg.thinning
            unroll = unroll_entity_draws(spec, sweeps, cfg.num_chains)
            # the sampler hands back the training rows' latent values for the pointwise
            # groups (MovieLens ua MF, 4 x 700 sweeps: recomputing them took 6.5 s). Over
            # several processes each holds only its own rows of them: recompute there
            collect = self.store_pointwise and jax.process_count() == 1
            kernel = FMGibbs(spec, mesh, unroll, collect_latent=collect)
            return run_gibbs(kernel, args, cfg, key)
        nuts_spec = replace(spec, prior=replace(spec.prior, parametrization=cfg.parametrization))
        init = None
        if cfg.init_svi_steps > 0:
            init = partial(_svi_init, spec=spec, nuts_spec=nuts_spec, args=args, cfg=cfg)
        return run_nuts(
            partial(fm_model, spec=nuts_spec),
            args,
            cfg,
            key,
            partial(complete_samples, nuts_spec, data=data),
            initial_values(nuts_spec, jax.random.fold_in(key, 1)),
            init,
        )

    def _check_devices(self, cfg) -> int:
        """Devices the rows are split over; refuses combinations that cannot share them."""
        n_dev = sharding.resolve_devices(self.data_devices)
        if n_dev > 1 and isinstance(cfg, SVIConfig) and cfg.minibatch:
            raise ValueError(
                f"data_devices: got {self.data_devices!r} with minibatch SVI (batch_size="
                f"{cfg.batch_size}, holdout={cfg.holdout}); minibatch SVI runs on one device"
            )
        if n_dev > 1 and getattr(cfg, "chain_method", None) == "parallel":
            raise ValueError(
                f"data_devices: got {self.data_devices!r} with chain_method='parallel'; the "
                "devices hold the rows, so run the chains 'vectorized' or 'sequential'"
            )
        return n_dev

    def _check_pointwise_size(self, cfg, n_rows: int) -> None:
        """Refuse, before any work, pointwise groups that would not fit in memory."""
        if not self.store_pointwise:
            return
        chains = getattr(cfg, "num_chains", 1)
        floats = 2 * chains * cfg.num_samples * n_rows  # log-likelihood + posterior predictive
        if floats * 4 > POINTWISE_LIMIT_BYTES:
            raise ValueError(
                f"store_pointwise: got True, but the pointwise log-likelihood and posterior "
                f"predictive of {n_rows:,} rows x {chains * cfg.num_samples:,} draws would take "
                f"{floats * 4 / 2**30:.1f} GiB (limit {POINTWISE_LIMIT_BYTES / 2**30:.0f} GiB); "
                "pass store_pointwise=False, or fewer draws"
            )

    def _inference_data(self, X: pd.DataFrame, y: np.ndarray, encoded: Encoded):
        """InferenceData with posterior (plus probe predictions) and the per-row groups."""
        cols = self.encoder_.spec.columns
        probe = self.probe_
        n = len(X)
        c, d = self.draws_.num_chains, self.draws_.num_draws
        pointwise = self.store_pointwise
        # the training rows' latent values are needed only for the pointwise groups; a
        # sampler that kept them (Gibbs) saves computing them again from the draws
        kept = self.draws_.latent if pointwise else None
        scored = n if pointwise and kept is None else 0
        training = X[cols].iloc[:scored]
        full = self.encoder_.transform(pd.concat([training, probe[cols]], ignore_index=True))
        loglik = np.empty((c * d, n), np.float32) if pointwise else None
        ppc = np.empty((c * d, n), np.float32) if pointwise else None
        probe_eta = np.empty((c * d, len(probe)), np.float32)
        engine = self._engine()

        def score(k: int, rows: slice, eta: np.ndarray) -> None:
            rng = np.random.default_rng([self.random_state, k, 1])
            # the ordinal task's class probabilities serve both groups
            lps = engine.class_log_probs(eta) if self.task == "ordinal" else None
            loglik[:, rows] = self._log_density(eta, y[rows], lps)
            ppc[:, rows] = self._predictive_draws(eta, rng, lps)

        if kept is not None:
            kept = kept.reshape(c * d, -1)
            # the row chunks (and so the predictive draws' seeds) of the path below
            size = engine.chunk_size_for(n + len(probe))
            for k, start in enumerate(range(0, n, size)):
                rows = slice(start, min(start + size, n))
                score(k, rows, kept[:, rows])
        for k, (start, stop, eta) in enumerate(engine.iter_latent(full, self.random_state)):
            cut = min(max(scored - start, 0), stop - start)  # rows of this chunk that are training
            if cut > 0:
                score(k, slice(start, start + cut), eta[:, :cut])
            if cut < stop - start:
                lo = max(start, scored) - scored
                probe_eta[:, lo : lo + (stop - start - cut)] = self._expected(eta[:, cut:])
        probe_ds = xr.Dataset(
            {"probe": (("chain", "draw", "probe_cell"), probe_eta.reshape(c, d, -1))},
            coords={
                "chain": np.arange(c),
                "draw": np.arange(d),
                "probe_cell": np.arange(len(probe)),
                "probe_label": ("probe_cell", np.asarray(probe_labels(probe, self.encoder_))),
                "probe_kind": ("probe_cell", probe["probe_kind"].to_numpy().astype(str)),
            },
        )
        groups = {}
        if pointwise:
            for name, values in (("log_likelihood", loglik), ("posterior_predictive", ppc)):
                groups[name] = idata_mod.obs_dataset({"y": values.reshape(c, d, n)}, X.index)
        groups["observed_data"] = idata_mod.obs_dataset(
            {"y": y.astype(np.float32)}, X.index, with_draws=False
        )
        groups["constant_data"] = idata_mod.encoded_dataset(encoded, X.index)
        return idata_mod.build(
            self.draws_,
            self.encoder_,
            self.spec_,
            attrs=self._idata_attrs(),
            store_factors=self.store_factors,
            extra_posterior=probe_ds,
            **groups,
        )

    def _idata_attrs(self) -> dict[str, Any]:
        return {
            "inference_library": "bayesfm",
            "bayesfm_version": __version__,
            "estimator": type(self).__name__,
            "estimator_params": idata_mod.to_json(params_to_dict(self)),
            "inference_method": self.draws_.method,
            "timings": idata_mod.to_json(self.timings_),
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the fitted model (InferenceData, encoders, configuration) to a NetCDF file.

        The file is written under a temporary name and renamed when complete, so a failure
        never damages an existing file. :func:`bayesfm.load` restores the model.

        Parameters
        ----------
        path : str or os.PathLike
            The file to write (conventionally ``*.nc``); its folder must exist.

        Returns
        -------
        pathlib.Path
            The path written.

        Raises
        ------
        NotFittedError
            The model is not fitted.

        Examples
        --------
        >>> import pathlib, tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = model.save(pathlib.Path(tmp) / "model.nc")
        ...     print(path.name, path.stat().st_size > 0)
        model.nc True
        """
        return persistence.save(self, path)

    def diagnose(self) -> pd.DataFrame:
        """Convergence table on identified quantities; see :func:`bayesfm.diagnostics.diagnose`.

        Returns
        -------
        pandas.DataFrame
            One row per identified quantity or sampler check, with a ``flag`` column.

        Raises
        ------
        NotFittedError
            The model is not fitted.

        Examples
        --------
        >>> table = model.diagnose()
        >>> table.columns.tolist()
        ['quantity', 'kind', 'mean', 'sd', 'r_hat', 'ess_bulk', 'ess_tail', 'mcse_mean', 'flag', 'reason']
        """  # noqa: E501
        return diagnose(self)

    # ---------------------------------------------------------------------- prediction
    def _engine(self) -> PredictiveEngine:
        return PredictiveEngine(self.spec_, self.draws_.samples, self.offset_, self.chunk_size)

    def _encode_new(self, X: pd.DataFrame) -> Encoded:
        self._check_fitted()
        FittedEncoder.check_table(X, self.encoder_.spec.columns)
        if self.cold_start == "error":
            unknown = self.encoder_.unknown_levels(X)
            if unknown:
                shown = {k: v[:5] for k, v in unknown.items()}
                raise ValueError(
                    f"X: unseen levels {shown} and cold_start='error'; use cold_start='prior' "
                    "to draw them from their group's prior"
                )
        return self.encoder_.transform(X)

    def _predictive_draws(
        self, eta: np.ndarray, rng: np.random.Generator, log_probs: np.ndarray | None = None
    ) -> np.ndarray:
        """Observation-level draws given latent means ``eta`` (draws, rows).

        ``log_probs``: the ordinal task's class log-probabilities of ``eta``, if at hand.
        """
        engine = self._engine()
        if self.task == "regression":
            # in place and in float32: the pointwise groups of a default fit draw 10^8 of these
            draws = rng.standard_normal(eta.shape, dtype=np.float32)
            draws *= engine.noise()[:, None]
            draws += eta
            return draws
        if self.task == "binary":
            return (rng.random(eta.shape) < engine.success_prob(eta)).astype(np.float32)
        probs = np.exp(engine.class_log_probs(eta) if log_probs is None else log_probs)
        u = rng.random(eta.shape)[..., None]
        cls = np.minimum((np.cumsum(probs, -1) < u).sum(-1), len(self.classes_) - 1)
        return self.classes_[cls].astype(np.float32)

    def _predictive_quantiles(self, eta: np.ndarray, rng: np.random.Generator, q) -> np.ndarray:
        """Quantiles ``q`` of the observation-level draws, per row.

        Discrete outcomes (binary, ordinal) take the inverted-CDF quantile, so that interval
        ends are labels and not interpolations between them.
        """
        method = "linear" if self.task == "regression" else "inverted_cdf"
        return np.quantile(self._predictive_draws(eta, rng), q, 0, method=method)

    def _expected(self, eta: np.ndarray) -> np.ndarray:
        """E[y | draw] for each draw and row."""
        engine = self._engine()
        if self.task == "regression":
            return eta
        if self.task == "binary":
            return engine.success_prob(eta)
        return np.exp(engine.class_log_probs(eta)) @ self.classes_.astype(np.float32)

    def _log_density(
        self, eta: np.ndarray, y: np.ndarray, log_probs: np.ndarray | None = None
    ) -> np.ndarray:
        """log p(y | draw) for each draw and row; ``y`` on the original label scale.

        ``log_probs``: the ordinal task's class log-probabilities of ``eta``, if at hand.
        """
        engine = self._engine()
        if self.task == "regression":
            # norm.logpdf in float32 and in place (scipy's takes float64 and 4x the time)
            sd = engine.noise()[:, None].astype(np.float32)
            out = np.subtract(y.astype(np.float32)[None], eta, dtype=np.float32)
            out /= sd
            np.square(out, out=out)
            out *= np.float32(-0.5)
            out -= np.log(sd) + np.float32(0.5 * np.log(2.0 * np.pi))
            return out
        if self.task == "binary":
            p = np.clip(engine.success_prob(eta).astype(np.float64), 1e-12, 1 - 1e-12)
            return np.where(y[None] == 1, np.log(p), np.log1p(-p)).astype(np.float32)
        lps = engine.class_log_probs(eta) if log_probs is None else log_probs
        cls = np.searchsorted(self.classes_, y)[None, :, None]
        return np.take_along_axis(lps, np.broadcast_to(cls, (*eta.shape, 1)), -1)[..., 0]

    def _chunks(self, X: pd.DataFrame, enc: Encoded | None = None):
        enc = self._encode_new(X) if enc is None else enc
        engine = self._engine()
        for c, (start, stop, eta) in enumerate(engine.iter_latent(enc, self.random_state)):
            rng = np.random.default_rng([self.random_state, c])
            yield start, stop, eta, rng

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """Posterior predictive mean (``P(y=1)`` for binary, E[class] for ordinal).

        Parameters
        ----------
        X : pandas.DataFrame
            Rows to predict, with every column the feature spec reads. Ids unseen in
            training follow ``cold_start``.

        Returns
        -------
        numpy.ndarray
            One value per row of ``X``.

        Raises
        ------
        NotFittedError
            The model is not fitted.
        ValueError
            Columns are missing, or ``X`` holds unseen ids and ``cold_start="error"``.

        Examples
        --------
        >>> model.predict(X.head(3)).shape
        (3,)
        """
        out = np.empty(len(X) if isinstance(X, pd.DataFrame) else 0)
        for start, stop, eta, _ in self._chunks(X):
            out[start:stop] = self._expected(eta).mean(0)
        return out

    def predict_interval(self, X: pd.DataFrame, prob: float = 0.9) -> pd.DataFrame:
        """Equal-tailed posterior predictive interval (observation noise included).

        Parameters
        ----------
        X : pandas.DataFrame
            Rows to predict, with every column the feature spec reads.
        prob : float
            Probability mass of the central interval, in (0, 1).

        Returns
        -------
        pandas.DataFrame
            Columns ``mean``, ``lower``, ``upper``, indexed like ``X``.

        Raises
        ------
        ValueError
            ``prob`` is not in (0, 1), or ``X`` does not match the model.
        NotFittedError
            The model is not fitted.

        Examples
        --------
        >>> interval = model.predict_interval(X.head(3), prob=0.9)
        >>> interval.columns.tolist()
        ['mean', 'lower', 'upper']
        >>> bool((interval["lower"] < interval["upper"]).all())
        True
        """
        if not (isinstance(prob, float | int) and 0 < prob < 1):
            raise ValueError(f"prob: got {prob!r}; must be a number in (0, 1)")
        self._check_fitted()
        n = len(X) if isinstance(X, pd.DataFrame) else 0
        mean, lo, hi = np.empty(n), np.empty(n), np.empty(n)
        q = [(1 - prob) / 2, (1 + prob) / 2]
        for start, stop, eta, rng in self._chunks(X):
            mean[start:stop] = self._expected(eta).mean(0)
            lo[start:stop], hi[start:stop] = self._predictive_quantiles(eta, rng, q)
        return pd.DataFrame({"mean": mean, "lower": lo, "upper": hi}, index=X.index)

    def predict_posterior(self, X: pd.DataFrame, latent: bool = False) -> xr.DataArray:
        """Posterior predictive draws as a DataArray with dims ``(chain, draw, obs)``.

        The draws, and the encoded indices of ``X``, also replace the ``predictions`` and
        ``predictions_constant_data`` groups of ``idata_``.

        Parameters
        ----------
        X : pandas.DataFrame
            Rows to predict, with every column the feature spec reads.
        latent : bool
            Return the noise-free latent mean ``E[y | draw]`` instead of observation draws.

        Returns
        -------
        xarray.DataArray
            Named ``y`` (or ``y_latent``), shape ``(chains, draws, len(X))``; the ``obs``
            coordinate is the index of ``X``.

        Raises
        ------
        NotFittedError
            The model is not fitted.
        ValueError
            ``X`` does not match the model.

        Examples
        --------
        >>> draws = model.predict_posterior(X.head(3))
        >>> draws.dims
        ('chain', 'draw', 'obs')
        >>> draws.sizes["obs"]
        3
        """
        self._check_fitted()
        enc = self._encode_new(X)
        c, d = self.draws_.num_chains, self.draws_.num_draws
        out = np.empty((c * d, len(X)), np.float32)
        for start, stop, eta, rng in self._chunks(X, enc):
            out[:, start:stop] = self._expected(eta) if latent else self._predictive_draws(eta, rng)
        name = "y_latent" if latent else "y"
        draws = xr.DataArray(
            out.reshape(c, d, len(X)),
            dims=("chain", "draw", "obs"),
            coords={
                "chain": np.arange(c),
                "draw": np.arange(d),
                "obs": idata_mod.coord_values(X.index.to_numpy()),
            },
            name=name,
        )
        self.idata_ = idata_mod.with_predictions(
            self.idata_, draws.to_dataset(), idata_mod.encoded_dataset(enc, X.index.to_numpy())
        )
        return draws

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """Class probabilities averaged over the posterior.

        Parameters
        ----------
        X : pandas.DataFrame
            Rows to predict, with every column the feature spec reads.

        Returns
        -------
        numpy.ndarray
            Shape ``(n, 2)`` for binary (columns P(0), P(1)), ``(n, C)`` for ordinal with
            columns in the order of ``classes_``.

        Raises
        ------
        ValueError
            The task is ``"regression"``, or ``X`` does not match the model.
        NotFittedError
            The model is not fitted.

        Examples
        --------
        A binary model of "rated above 4":

        >>> import bayesfm as bfm
        >>> import numpy as np
        >>> data = bfm.datasets.make_synthetic(n_users=20, n_items=15, n_obs=300, seed=0)
        >>> liked = (data.y > 4).astype(int)
        >>> clf = bfm.BayesianMF(rank=2, task="binary", progress_bar=False,
        ...                      inference=bfm.SVIConfig(num_steps=200, num_samples=50))
        >>> proba = clf.fit(data.X, liked).predict_proba(data.X.head(3))
        >>> proba.shape
        (3, 2)
        >>> bool(np.allclose(proba.sum(axis=1), 1.0))
        True
        """
        self._check_fitted()
        if self.task == "regression":
            raise ValueError(
                "predict_proba: task='regression' has no classes; use 'binary' or 'ordinal'"
            )
        engine = self._engine()
        cols = 2 if self.task == "binary" else len(self.classes_)
        out = np.empty((len(X), cols))
        for start, stop, eta, _ in self._chunks(X):
            if self.task == "binary":
                p1 = engine.success_prob(eta).mean(0)
                out[start:stop] = np.stack([1 - p1, p1], -1)
            else:
                out[start:stop] = np.exp(engine.class_log_probs(eta)).mean(0)
        return out

    def score(self, X: pd.DataFrame, y: Any) -> float:
        """Mean log pointwise predictive density of ``y`` (higher is better).

        Parameters
        ----------
        X : pandas.DataFrame
            Held-out rows, with every column the feature spec reads.
        y : array-like
            Their observed targets.

        Returns
        -------
        float
            ``mean_i log (1/S sum_s p(y_i | draw s))``.

        Raises
        ------
        ValueError
            ``y`` does not match ``X`` or holds labels the model has not seen.
        NotFittedError
            The model is not fitted.

        Examples
        --------
        >>> lpd = model.score(X.head(50), y[:50])
        >>> isinstance(lpd, float)
        True
        """
        self._check_fitted()
        y_arr = self._validated_target(y, len(X))
        if self.task == "ordinal":
            unseen = np.setdiff1d(np.unique(y_arr), self.classes_)
            if len(unseen):
                raise ValueError(
                    f"y: ordinal labels {unseen[:5].tolist()} were not seen in training; "
                    f"allowed classes are {self.classes_.tolist()}"
                )
        total = 0.0
        for start, stop, eta, _ in self._chunks(X):
            lp = self._log_density(eta, y_arr[start:stop])
            m = lp.max(0)
            total += float(np.sum(m + np.log(np.exp(lp - m).mean(0))))
        return total / len(X)

    # ------------------------------------------------------------------ recommendations
    def _seen_pairs(self, user_dim: str, item_dim: str) -> np.ndarray:
        """Sorted keys ``user_index * n_items + item_index`` of the training pairs."""
        cache = self.__dict__.setdefault("_seen_cache", {})
        if (user_dim, item_dim) not in cache:
            const = self.idata_.constant_data
            n_items = len(self.encoder_.levels[item_dim])
            keys = const[f"{user_dim}_index"].to_numpy().astype(np.int64) * n_items
            keys += const[f"{item_dim}_index"].to_numpy().astype(np.int64)
            cache[(user_dim, item_dim)] = np.unique(keys)
        return cache[(user_dim, item_dim)]

    def recommend(
        self,
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
        """Top-``n`` items for each user, ranked by a strategy that uses the posterior.

        Every (user, candidate) pair is scored in vectorized blocks whose size is bounded
        by the number of posterior draws, so memory does not grow with users x candidates.

        Parameters
        ----------
        users : sequence of ids, or pandas.DataFrame
            The users to recommend for. A DataFrame holds the user column and, for users not
            seen in training, their side features (the attributes the feature spec gives to
            the user). Unseen users follow ``cold_start``: their parameters are drawn from
            the group prior, or a ``ValueError`` is raised.
        n : int
            Items per user. Users with fewer eligible candidates get fewer rows.
        candidates : sequence of item ids, optional
            The items to rank, in an order that breaks ties. Default: every item seen in
            training, followed by the new items of ``items``.
        exclude_seen : bool
            Drop the (user, item) pairs rated in training.
        strategy : {"mean", "prob", "ucb", "thompson"}
            ``"mean"``: posterior predictive mean. ``"prob"``: posterior probability that
            the rating reaches ``threshold`` (``P(y = 1)`` for the binary task). ``"ucb"``:
            the ``quantile`` of the posterior of the expected rating ``E[y | theta]``, an
            optimistic score that favours uncertain items. ``"thompson"``: one posterior
            draw per user per call, ranked by ``E[y | theta_draw]``; over calls an item comes
            first as often as the posterior believes it is the best.
        items : pandas.DataFrame, optional
            Side features of candidate items not seen in training (the item column plus the
            item's attributes), so that cold-start items can be recommended. Items seen in
            training keep their training attributes.
        threshold : float, optional
            Rating threshold of ``strategy="prob"`` (required unless the task is binary).
        quantile : float
            Upper quantile of ``strategy="ucb"``.
        prob : float
            Probability mass of the reported central interval.
        interval : {"latent", "predictive"}
            ``"latent"``: credible interval of the expected rating ``E[y | theta]`` (what
            the model knows about the pair). ``"predictive"``: the posterior predictive
            interval with observation noise, as in :meth:`predict_interval`.
        seed : int, optional
            Seed of the Thompson draws; ``None`` takes fresh entropy, so that repeated calls
            explore.
        user, item : str, optional
            Columns of the user and item ids. Default: ``BayesianMF``'s, or the two entity
            fields of the feature spec in order.

        Returns
        -------
        pandas.DataFrame
            Columns ``<user>, rank, <item>, score, mean, lower, upper``: one row per
            recommendation, users in the order given, ranks from 1. Ties in ``score`` go to
            the candidate listed first.

        Raises
        ------
        ValueError
            An unknown ``strategy`` or ``interval``, ``strategy="prob"`` without
            ``threshold``, unseen users with ``cold_start="error"``, or missing columns.
        NotFittedError
            The model is not fitted.

        Examples
        --------
        >>> users = X["user_id"].unique()[:2]
        >>> recs = model.recommend(users, n=3, strategy="ucb")
        >>> recs.columns.tolist()
        ['user_id', 'rank', 'item_id', 'score', 'mean', 'lower', 'upper']
        >>> recs["rank"].tolist()
        [1, 2, 3, 1, 2, 3]
        """
        return recommend_mod.recommend(
            self,
            users,
            n=n,
            candidates=candidates,
            exclude_seen=exclude_seen,
            strategy=strategy,
            items=items,
            threshold=threshold,
            quantile=quantile,
            prob=prob,
            interval=interval,
            seed=seed,
            user=user,
            item=item,
        )


class BayesianMF(BayesianFM):
    """Bayesian matrix factorization: the FM with exactly two one-hot fields, user and item.

    Uses a faster two-gather predictor with the same model equation and site names as
    :class:`BayesianFM` on ``FeatureSpec([Categorical(user), Categorical(item)])``.

    Parameters
    ----------
    rank : int
        Number of latent factors.
    user, item : str
        Columns holding the user and item ids.
    task, link, inference, prior, cold_start, chunk_size : see BayesianFM
        As in :class:`BayesianFM`.
    random_state, progress_bar, store_factors, store_pointwise, data_devices : see BayesianFM
        As in :class:`BayesianFM`.

    Examples
    --------
    >>> import bayesfm as bfm
    >>> mf = bfm.BayesianMF(rank=4, user="user_id", item="item_id", inference="gibbs")
    >>> mf.features
    FeatureSpec([Categorical(column='user_id', owner=None, name=None), Categorical(column='item_id', owner=None, name=None)])

    ``mf.fit(X, y)`` then works as for :class:`BayesianFM`; see its example.
    """  # noqa: E501

    def __init__(
        self,
        rank: int = 8,
        user: str = "user_id",
        item: str = "item_id",
        task: str = "regression",
        link: str = "probit",
        inference: str | InferenceConfig = "nuts",
        prior: PriorConfig | None = None,
        cold_start: str = "prior",
        chunk_size: int = 4096,
        random_state: int = 0,
        progress_bar: bool | None = None,
        store_factors: bool = True,
        store_pointwise: bool = True,
        data_devices: int | str | None = None,
    ) -> None:
        self.user = user
        self.item = item
        super().__init__(
            rank=rank,
            features=None,
            task=task,
            link=link,
            inference=inference,
            prior=prior,
            cold_start=cold_start,
            chunk_size=chunk_size,
            random_state=random_state,
            progress_bar=progress_bar,
            store_factors=store_factors,
            store_pointwise=store_pointwise,
            data_devices=data_devices,
        )

    @property
    def features(self) -> FeatureSpec:  # type: ignore[override]
        """The two-field spec ``[Categorical(user), Categorical(item)]``.

        Examples
        --------
        >>> import bayesfm as bfm
        >>> bfm.BayesianMF(user="customer", item="product").features.columns
        ['customer', 'product']
        """
        return FeatureSpec([Categorical(self.user), Categorical(self.item)])

    @features.setter
    def features(self, value: Any) -> None:
        if value is not None:
            raise ValueError("features: BayesianMF takes user= and item= columns, not features")

    def _model_spec(self, encoder, rank, prior, n_classes):
        return replace(super()._model_spec(encoder, rank, prior, n_classes), use_mf_path=True)


# ---------------------------------------------------------------------------------- helpers
def params_to_dict(model: BayesianFM) -> dict[str, Any]:
    """Constructor parameters of ``model`` as JSON-friendly values (inverse: params_from_dict)."""
    out: dict[str, Any] = {}
    for name, value in model.get_params().items():
        if isinstance(value, FeatureSpec):
            value = {"feature_spec": value.to_dict()}
        elif isinstance(value, list | tuple) and name == "features":
            value = {"feature_spec": FeatureSpec(value).to_dict()}
        elif isinstance(value, PriorConfig):
            value = {"prior_config": asdict(value)}
        elif name == "inference" and not isinstance(value, str):
            value = {"inference_config": config_to_dict(value)}
        out[name] = value
    return out


def params_from_dict(params: dict[str, Any]) -> dict[str, Any]:
    """Constructor keyword arguments from :func:`params_to_dict` output."""
    out = {}
    for name, value in params.items():
        if isinstance(value, dict) and "feature_spec" in value:
            value = FeatureSpec.from_dict(value["feature_spec"])
        elif isinstance(value, dict) and "prior_config" in value:
            value = PriorConfig(**value["prior_config"])
        elif isinstance(value, dict) and "inference_config" in value:
            value = config_from_dict(value["inference_config"])
        out[name] = value
    return out


def complete_samples(
    spec: ModelSpec,
    samples: dict[str, np.ndarray],
    unconstrained: bool = False,
    data: dict[str, Any] | None = None,
) -> dict[str, np.ndarray]:
    """Add derived sites: ``sigma``; centred ``w_g``/``v_g`` from non-centred ``_z`` sites,
    and from the totals ``_tot`` of the ``"entity"`` parametrization (which need the
    training ``data``, whose owned features are subtracted). Draws lie along the first axis.
    """
    if unconstrained:
        samples = {k: np.asarray(v) for k, v in constrain(samples).items()}
    out = dict(samples)
    if "noise_precision" in out and "sigma" not in out:
        out["sigma"] = 1.0 / np.sqrt(out["noise_precision"])
    for g in spec.structure.groups:
        if f"w_{g}" not in out and f"w_{g}_z" in out:
            out[f"w_{g}"] = out[f"w_mu_{g}"][:, None] + out[f"w_{g}_z"] / np.sqrt(
                out[f"w_lambda_{g}"][:, None]
            )
        if f"v_{g}" not in out and f"v_{g}_z" in out:
            out[f"v_{g}"] = out[f"v_mu_{g}"][:, None, :] + out[f"v_{g}_z"] / np.sqrt(
                out[f"v_lambda_{g}"][:, None, :]
            )
    totals = [d for d in entity_owners(spec.structure) if f"w_{d}" not in out]
    if totals:
        if data is None:
            raise RuntimeError("bayesfm internal error: entity totals need the training data")
        owned = _owned_draws(spec, out, data)
        for d in totals:
            lin, s = owned[d]
            out[f"w_{d}"] = out[f"w_{d}_tot"] - lin
            out[f"v_{d}"] = out[f"v_{d}_tot"] - s
    return out


# draws per compiled step of _owned_draws: bounds the (draws, nonzeros, rank) intermediate
_OWNED_DRAW_BATCH = 16


def _owned_draws(spec: ModelSpec, draws: dict[str, Any], data: dict[str, Any]) -> dict:
    """:func:`bayesfm.fm.owned_sums` for every draw (first axis) of the owned features."""
    structure = spec.structure
    owned_terms = [t.dim for t in structure.terms if t.carrier != ROW]
    params = {f"{p}_{d}": jnp.asarray(draws[f"{p}_{d}"]) for d in owned_terms for p in "wv"}
    terms = {d: data["terms"][d] for d in owned_terms}
    result = jax.lax.map(
        lambda p: {d: parts[:2] for d, parts in owned_sums(p, terms, structure).items()},
        params,
        batch_size=_OWNED_DRAW_BATCH,
    )
    return {d: (np.asarray(lin), np.asarray(s)) for d, (lin, s) in result.items()}


def _svi_init(key, *, spec: ModelSpec, nuts_spec: ModelSpec, args: tuple, cfg: NUTSConfig):
    """Initial NUTS state from a short mean-field SVI fit of the centred model.

    Each chain starts from an independent draw of the fitted guide (over-dispersed starts for
    R-hat), and the diagonal inverse mass matrix starts at the guide's variances.
    """
    centred = replace(spec, prior=replace(spec.prior, parametrization="centered"))
    svi_cfg = SVIConfig(num_steps=cfg.init_svi_steps, progress_bar=cfg.progress_bar)
    k_fit, k_draw = jax.random.split(key)
    k_fit, k_val = jax.random.split(k_fit)
    values = initial_values(centred, k_val)
    _, params, _, timings = fit_svi(partial(fm_model, spec=centred), args, svi_cfg, k_fit, values)
    # one compiled program: run op by op, these few lines compiled for about 10 s
    starts = jax.jit(partial(_chain_starts, spec=spec, nuts_spec=nuts_spec, cfg=cfg))
    z, inv_mass = starts(params, k_draw, args[0])
    return z, inv_mass, timings


def _chain_starts(params: dict, key: jax.Array, data: dict, *, spec, nuts_spec, cfg) -> tuple:
    """``(starts, inverse mass)`` of :func:`_svi_init` from the fitted guide's parameters."""
    loc = {k[: -len("_auto_loc")]: v for k, v in params.items() if k.endswith("_auto_loc")}
    scale = {k[: -len("_auto_scale")]: v for k, v in params.items() if k.endswith("_auto_scale")}
    flat, unravel = ravel_pytree(loc)
    eps = jax.vmap(unravel)(jax.random.normal(key, (cfg.num_chains, flat.shape[0])))
    z = {k: loc[k] + scale[k] * eps[k] for k in loc}  # unconstrained draws, one per chain
    var = {k: scale[k] ** 2 for k in loc}
    if nuts_spec.prior.parametrization == "noncentered":
        for g in spec.structure.groups:
            for p in ("w", "v"):
                mu = z[f"{p}_mu_{g}"]
                lam = jnp.exp(z[f"{p}_lambda_{g}"])  # Gamma sites live on the log scale
                x = z.pop(f"{p}_{g}")
                expand = (lambda a: a[:, None]) if p == "w" else (lambda a: a[:, None, :])
                z[f"{p}_{g}_z"] = (x - expand(mu)) * jnp.sqrt(expand(lam))
                lam0 = jnp.exp(loc[f"{p}_lambda_{g}"])
                var[f"{p}_{g}_z"] = var.pop(f"{p}_{g}") * (lam0 if p == "w" else lam0[None, :])
    if nuts_spec.prior.parametrization == "entity":
        owned = jax.vmap(lambda p: owned_sums(p, data["terms"], spec.structure))(z)
        for d, (lin, s, _) in owned.items():
            for p, shift in (("w", lin), ("v", s)):
                z[f"{p}_{d}_tot"] = z.pop(f"{p}_{d}") + shift
                var[f"{p}_{d}_tot"] = var.pop(f"{p}_{d}")  # the totals' spread, roughly
    inv_mass, _ = ravel_pytree({k: jnp.clip(v, 1e-6, 1e2) for k, v in var.items()})
    if cfg.num_chains == 1:  # numpyro expects no chain axis for a single chain
        z = {k: v[0] for k, v in z.items()}
    return z, inv_mass
