"""bayesfm: Bayesian matrix factorization and factorization machines on NumPyro/JAX."""

from importlib.metadata import PackageNotFoundError, version

from . import datasets
from .data import Categorical, FeatureSpec, Implicit, MultiHot, Numeric
from .estimators import BayesianFM, BayesianMF, NotFittedError
from .inference import GibbsConfig, NUTSConfig, SVIConfig
from .priors import PriorConfig

try:
    __version__ = version("bayesfm")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+local"

__all__ = [
    "BayesianFM",
    "BayesianMF",
    "Categorical",
    "FeatureSpec",
    "GibbsConfig",
    "Implicit",
    "MultiHot",
    "NUTSConfig",
    "NotFittedError",
    "Numeric",
    "PriorConfig",
    "SVIConfig",
    "datasets",
]
