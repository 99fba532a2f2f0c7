"""libFM-style hierarchical priors: a Normal–Gamma hyperprior per feature group.

For each group ``g`` (one field) and for the linear weights and every factor dimension::

    lambda_g ~ Gamma(alpha0, beta0)
    mu_g     ~ Normal(mu0, 1 / sqrt(gamma0 * lambda_g))
    w_j      ~ Normal(mu_g, 1 / sqrt(lambda_g))          for every level j of the group

and a Gamma(noise_alpha, noise_beta) prior on the noise precision of the Gaussian likelihood.
The ``"noncentered"`` parametrization samples ``z_j ~ Normal(0, 1)`` and sets
``w_j = mu_g + z_j / sqrt(lambda_g)``, which removes the funnel for NUTS; SVI works best centered.

The ``"entity"`` parametrization is centred, except that an entity (user, item) that owns
features (demographics, genres, implicit sets) is sampled as its total: ``t_e = w_e + o_e``
with ``o_e`` the sum of its owned features' weights, so ``t_e ~ Normal(mu_g + o_e,
1/sqrt(lambda_g))`` and ``w_e = t_e - o_e`` (the same for each factor dimension). The shift has
unit Jacobian, so the posterior is the same. The likelihood sees entities almost only through
their totals, so in the centred form every owned weight and its owners' weights can trade along
a long direction the data do not see (``bayesfm.ridge`` lists them); in this form the owned
weights are regression coefficients of the totals, pinned by every member of the entity group
(hierarchical centring, Gelfand, Sahu & Carlin, 1995).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

__all__ = ["PriorConfig", "sample_group", "PARAMETRIZATIONS"]

PARAMETRIZATIONS = ("centered", "noncentered", "entity")


@dataclass(frozen=True)
class PriorConfig:
    """Hyperparameters of the hierarchical prior.

    The defaults are libFM's and myFM's. Those tools write the precision prior as
    ``Gamma(a0 / 2, b0 / 2)`` with ``a0 = b0 = 1`` (and the same for the noise), that is
    shape = rate = 0.5 here. bayesfm 0.1 used shape = rate = 1, which
    puts less mass near zero precision; pass ``alpha0=1, beta0=1, noise_alpha=1,
    noise_beta=1`` to get that prior back (the user guide's section on priors says what it
    changes on MovieLens).

    Parameters
    ----------
    alpha0, beta0 : float
        Shape and rate of the Gamma prior on each group precision.
    gamma0 : float
        Prior precision multiplier of each group mean.
    mu0 : float
        Prior mean of each group mean.
    noise_alpha, noise_beta : float
        Shape and rate of the Gamma prior on the noise precision.
    bias_scale : float
        Prior standard deviation of the global bias (around the training mean).
    parametrization : {"centered", "noncentered", "entity"}
        How the group members are sampled (see the module docstring).

    Examples
    --------
    >>> import bayesfm as bfm
    >>> bfm.PriorConfig(parametrization="noncentered").alpha0
    0.5
    """

    alpha0: float = 0.5
    beta0: float = 0.5
    gamma0: float = 1.0
    mu0: float = 0.0
    noise_alpha: float = 0.5
    noise_beta: float = 0.5
    bias_scale: float = 5.0
    parametrization: str = "centered"

    def __post_init__(self) -> None:
        if self.parametrization not in PARAMETRIZATIONS:
            raise ValueError(
                f"parametrization: got {self.parametrization!r}; allowed {list(PARAMETRIZATIONS)}"
            )
        for name in ("alpha0", "beta0", "gamma0", "noise_alpha", "noise_beta", "bias_scale"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"{name}: got {value!r}; must be a positive number")

    def to_dict(self) -> dict:
        """Plain dict of the settings.

        Returns
        -------
        dict
            Field names to values; ``PriorConfig(**d)`` rebuilds the config.

        Examples
        --------
        >>> import bayesfm as bfm
        >>> settings = bfm.PriorConfig(bias_scale=2.0).to_dict()
        >>> settings["bias_scale"], bfm.PriorConfig(**settings) == bfm.PriorConfig(bias_scale=2.0)
        (2.0, True)
        """
        return asdict(self)


def sample_group(
    group: str,
    n_levels: int,
    rank: int,
    prior: PriorConfig,
    owned: tuple[jnp.ndarray, jnp.ndarray] | None = None,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Sample the hyperparameters, linear weights and factors of one group.

    Sites: ``w_mu_{group}``, ``w_lambda_{group}``, ``v_mu_{group}`` (rank,),
    ``v_lambda_{group}`` (rank,), ``w_{group}`` (n_levels,) and ``v_{group}`` (n_levels, rank),
    the members inside ``numpyro.plate(group)``. Returns ``(w, v)``.

    ``owned``: for an entity group, the per-level sums of its owned features' weights
    (n_levels,) and factors (n_levels, rank). With the ``"entity"`` parametrization the sites
    are then ``w_{group}_tot`` and ``v_{group}_tot`` (the totals), and ``w_{group}``,
    ``v_{group}`` are deterministic; otherwise ``owned`` is not used.
    """
    a0, b0, g0 = prior.alpha0, prior.beta0, prior.gamma0
    w_lam = numpyro.sample(f"w_lambda_{group}", dist.Gamma(a0, b0))
    w_mu = numpyro.sample(f"w_mu_{group}", dist.Normal(prior.mu0, 1.0 / jnp.sqrt(g0 * w_lam)))
    v_lam = numpyro.sample(f"v_lambda_{group}", dist.Gamma(a0, b0).expand([rank]).to_event(1))
    v_mu = numpyro.sample(
        f"v_mu_{group}", dist.Normal(prior.mu0, 1.0 / jnp.sqrt(g0 * v_lam)).to_event(1)
    )
    w_sd, v_sd = 1.0 / jnp.sqrt(w_lam), 1.0 / jnp.sqrt(v_lam)
    with numpyro.plate(group, n_levels, dim=-1):
        if prior.parametrization == "noncentered":
            wz = numpyro.sample(f"w_{group}_z", dist.Normal(0.0, 1.0))
            vz = numpyro.sample(f"v_{group}_z", dist.Normal(0.0, 1.0).expand([rank]).to_event(1))
            w = numpyro.deterministic(f"w_{group}", w_mu + w_sd * wz)
            v = numpyro.deterministic(f"v_{group}", v_mu + v_sd * vz)
        elif prior.parametrization == "entity" and owned is not None:
            w_own, v_own = owned
            wt = numpyro.sample(f"w_{group}_tot", dist.Normal(w_mu + w_own, w_sd))
            vt = numpyro.sample(f"v_{group}_tot", dist.Normal(v_mu + v_own, v_sd).to_event(1))
            w = numpyro.deterministic(f"w_{group}", wt - w_own)
            v = numpyro.deterministic(f"v_{group}", vt - v_own)
        else:
            w = numpyro.sample(f"w_{group}", dist.Normal(w_mu, w_sd))
            v = numpyro.sample(f"v_{group}", dist.Normal(v_mu, v_sd).to_event(1))
    return w, v
