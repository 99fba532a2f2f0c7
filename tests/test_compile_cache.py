"""The persistent compilation cache: hits give the same programs, bad folders are refused."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest
from jax import monitoring

import bayesfm as bfm
from bayesfm.compile_cache import default_cache_dir
from bayesfm.datasets import make_toy_mf


@pytest.fixture
def cache_hits(tmp_path):
    """Switches the cache to a fresh folder, counts its hits, and restores the session's."""
    session_folder = jax.config.jax_compilation_cache_dir
    hits = []

    def listener(event: str, **kwargs) -> None:
        if event == "/jax/compilation_cache/cache_hits":
            hits.append(event)

    monitoring.register_event_listener(listener)
    yield tmp_path / "cache", hits
    monitoring.unregister_event_listener(listener)
    jax.clear_caches()
    if session_folder:
        bfm.enable_compilation_cache(session_folder)


@pytest.mark.filterwarnings("ignore:.*convergence checks")  # expected of 5 + 5 sweeps
def test_a_refit_in_a_new_session_loads_its_programs_and_draws_the_same(cache_hits):
    folder, hits = cache_hits
    assert bfm.enable_compilation_cache(folder) == folder
    X, y = make_toy_mf()
    config = bfm.GibbsConfig(num_warmup=5, num_samples=5, num_chains=1)

    def fit():
        return bfm.BayesianMF(rank=2, inference=config, progress_bar=False).fit(X, y)

    first = fit()
    written = sorted(p.name for p in folder.iterdir())
    assert any("fori_collect" in name for name in written)  # the sampler's loop is stored
    hits_before = len(hits)  # programs traced twice within one fit already hit
    jax.clear_caches()  # what a new process starts from: no program in memory
    second = fit()
    assert len(hits) - hits_before >= len(written)  # every stored program was loaded
    assert sorted(p.name for p in folder.iterdir()) == written  # nothing compiled anew
    np.testing.assert_array_equal(second.draws_.samples["sigma"], first.draws_.samples["sigma"])
    np.testing.assert_array_equal(second.predict(X), first.predict(X))


def test_a_folder_that_cannot_be_made_is_refused(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ValueError, match="path: got .*a-file/jax.*cannot be used as a cache"):
        bfm.enable_compilation_cache(blocker / "jax")
    assert not (blocker.parent / "jax").exists()


def test_negative_min_compile_time_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"min_compile_time_s: got -1.0; allowed: a number >= 0"):
        bfm.enable_compilation_cache(tmp_path, min_compile_time_s=-1.0)


def test_default_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("BAYESFM_CACHE_DIR", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("BAYESFM_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "bayesfm" / "jax"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "bayesfm" / "jax"
