"""bayesfm: Bayesian matrix factorization and factorization machines on NumPyro/JAX."""

from . import datasets, diagnostics, metrics
from ._version import __version__
from .compile_cache import disable_compilation_cache, enable_compilation_cache
from .data import Categorical, FeatureSpec, Implicit, MultiHot, Numeric
from .estimators import BayesianFM, BayesianMF, NotFittedError
from .inference import GibbsConfig, NUTSConfig, SVIConfig
from .metrics import compare, evaluate, loo
from .persistence import load
from .priors import PriorConfig
from .report import report

__all__ = [
    "__version__",
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
    "compare",
    "datasets",
    "diagnostics",
    "disable_compilation_cache",
    "enable_compilation_cache",
    "evaluate",
    "load",
    "loo",
    "metrics",
    "report",
]
