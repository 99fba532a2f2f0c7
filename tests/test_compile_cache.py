"""The persistent compilation cache: hits give the same programs, bad folders are refused."""

from __future__ import annotations

import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import monitoring

import bayesfm as bfm
from bayesfm import compile_cache
from bayesfm.cli import main
from bayesfm.compile_cache import default_cache_dir, shared_within_block
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
    else:
        bfm.disable_compilation_cache()


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
    assert any("run_sweeps" in name for name in written)  # the sampler's loop is stored
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


@pytest.mark.parametrize("bad", [-1.0, "1", None, True])
def test_a_bad_min_compile_time_is_refused(tmp_path, bad):
    message = rf"min_compile_time_s: got {re.escape(repr(bad))}; allowed: a number >= 0"
    with pytest.raises(ValueError, match=message):
        bfm.enable_compilation_cache(tmp_path, min_compile_time_s=bad)


def test_disable_stops_storing_programs(cache_hits):
    folder, _ = cache_hits
    bfm.enable_compilation_cache(folder)
    bfm.disable_compilation_cache()
    assert not jax.config.jax_compilation_cache_dir
    jax.jit(lambda x: x * 3.0 + 1.0)(np.float32(2.0)).block_until_ready()
    assert list(folder.iterdir()) == []


def test_the_command_line_reports_an_unusable_cache_folder(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("BAYESFM_CACHE_DIR", str(blocker / "jax"))
    assert main(["demo", "--quiet"]) == 2  # refused before the demo fits anything
    err = capsys.readouterr().err
    assert err.startswith("bayesfm: error: BAYESFM_CACHE_DIR: path: got ")
    assert "cannot be used as a cache folder" in err


def test_default_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("BAYESFM_CACHE_DIR", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("BAYESFM_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "bayesfm" / "jax"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "bayesfm" / "jax"


def test_a_program_repeated_inside_the_block_is_compiled_once(cache_hits, monkeypatch):
    """numpyro builds each sequential chain's sampling loop as a new closure: inside
    ``shared_within_block`` the repeat is loaded from a temporary cache, and afterwards the
    user's settings (here: no cache) are back."""
    _, hits = cache_hits
    bfm.disable_compilation_cache()  # a user without a cache of their own
    monkeypatch.setattr(compile_cache, "_SHARED_MIN_COMPILE_S", 0.0)  # a small program here

    def run_loop(x):  # a new closure per call, as numpyro's per-chain loop
        return jax.jit(lambda v: jax.lax.fori_loop(0, 3, lambda i, u: jnp.sin(u) + i, v))(x)

    x = jnp.linspace(0.0, 1.0, 5)
    run_loop(x)  # outside the block: compiled, nothing stored
    with shared_within_block():
        first, second = run_loop(x), run_loop(x)
    assert len(hits) == 1
    np.testing.assert_array_equal(first, second)
    assert jax.config.jax_compilation_cache_dir is None
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 1.0
    run_loop(x)  # after the block: compiled again, nothing loaded
    assert len(hits) == 1
