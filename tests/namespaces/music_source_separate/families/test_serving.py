"""An imported tiny Mel-Band RoFormer served as a Demucs model is: a job's `model`, `stems` and
`no_<stem>`, a SAMI model through SAMI_MODEL_MAP, the listing with its licence, the stem cache,
`sami-gateway separate -n`."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import pytest

from namespaces.music_source_separate.models.catalogue import Catalogue
from namespaces.music_source_separate.models.repository import ModelRepository
from namespaces.music_source_separate.plugin import MusicSourceSeparate, create_namespace
from sami_gateway.cli.main import main
from sami_gateway.errors import GatewayError
from sami_gateway.runtime.namespace import Call
from sami_gateway.runtime.scheduler import Scheduler
from tests.conftest import tone, wav_bytes

from ..test_jobs import run_job
from ..test_plugin import config_for
from .tiny import MEL_BAND_ROFORMER, write_checkpoint

SECONDS = 0.25
# Longer chunks, no overlap and four chunks a call: a second of audio in three calls (the warm-up's).
SERVED = MEL_BAND_ROFORMER.replace("chunk_size: 1280", "chunk_size: 4416").replace(
    "num_overlap: 2", "num_overlap: 1").replace("batch_size: 1", "batch_size: 4")
MODEL_MAP = "2track_vocal=tiny_mel:vocals,2track_acc=tiny_mel:vocals,bs_4track_vocal=tiny_mel,bs_4track_acc=tiny_mel"


@pytest.fixture(scope="module")
def family_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding only the imported tiny Mel-Band RoFormer `tiny_mel` (licence CC-BY-4.0)."""
    downloads = tmp_path_factory.mktemp("downloads")
    (downloads / "config.yaml").write_text(SERVED)
    store = tmp_path_factory.mktemp("family-store")
    ModelRepository(store, catalogue=Catalogue.packaged()).import_family(
        "tiny_mel", write_checkpoint(downloads / "model.ckpt", SERVED), downloads / "config.yaml",
        licence="CC-BY-4.0")
    return store


@pytest.fixture
def scheduler(make_scheduler: Callable[[int, float], Scheduler]) -> Scheduler:
    return make_scheduler(4, 1000.0)


@pytest.fixture
async def namespace(family_store: Path, scheduler: Scheduler, tmp_path: Path) -> AsyncIterator[MusicSourceSeparate]:
    ns = create_namespace(config_for(family_store, tmp_path / "data", SAMI_MODEL_MAP=MODEL_MAP,
                                     SAMI_JOB_MODEL="tiny_mel", SAMI_PRECISION="exact"))
    await ns.start(scheduler)
    yield ns
    await ns.stop()


async def test_a_job_gets_vocals_and_no_vocals(namespace: MusicSourceSeparate, scheduler: Scheduler,
                                               tmp_path: Path) -> None:
    request = {"model": "tiny_mel", "stems": ["vocals", "no_vocals"]}
    ran = await run_job(namespace, scheduler, tmp_path / "w", request, wav_bytes(SECONDS))
    assert list(ran.output.stems) == ["vocals", "no_vocals"] and not ran.output.cache_hit
    frames = int(SECONDS * 44100)
    assert ran.units == 1  # three chunks, one call
    vocals, rate = ran.read("vocals")
    no_vocals, _ = ran.read("no_vocals")
    assert rate == 44100 and vocals.shape == (2, frames)
    assert float(np.abs(vocals).max()) > 1e-3  # the random network does not return silence
    np.testing.assert_allclose(vocals + no_vocals, tone(SECONDS).T, atol=1e-3)  # the mix minus the vocals
    again = await run_job(namespace, scheduler, tmp_path / "w2", {"model": "tiny_mel", "stems": ["no_vocals"]},
                          wav_bytes(SECONDS))
    assert again.output.cache_hit and again.units == 0  # the stem cache keys it like a Demucs model


async def test_a_job_of_it_is_never_streamed_but_separated_whole(family_store: Path, scheduler: Scheduler,
                                                                   tmp_path: Path) -> None:
    """The span-by-span separation has Demucs's windowing, not MSST's: a job of another family's model
    takes the whole-song path even where a Demucs job would stream (SAMI_STREAM_JOBS, or past
    SAMI_MAX_AUDIO_SECONDS), and so is refused past that limit rather than separated otherwise."""
    ns = create_namespace(config_for(family_store, tmp_path / "data", SAMI_STREAM_JOBS="true", SAMI_MODEL_MAP=MODEL_MAP,
                                     SAMI_JOB_MODEL="tiny_mel", SAMI_STEM_CACHE_BYTES="0"))
    await ns.start(scheduler)
    try:
        request = {"model": "tiny_mel", "stems": ["vocals"], "output": {"format": "wav"}}
        ran = await run_job(ns, scheduler, tmp_path / "w", request, wav_bytes(SECONDS))
        assert ran.units == 1  # MSST's chunking: one call (a streamed run would make Demucs's segment calls)
        assert ran.read("vocals")[0].shape == (2, int(SECONDS * 44100))
    finally:
        await ns.stop()
    short = create_namespace(config_for(family_store, tmp_path / "data2", SAMI_MAX_AUDIO_SECONDS="0.1",
                                        SAMI_MODEL_MAP=MODEL_MAP, SAMI_JOB_MODEL="tiny_mel"))
    await short.start(scheduler)
    try:
        with pytest.raises(GatewayError, match="the limit is 0.1 s"):
            await run_job(short, scheduler, tmp_path / "w2", request, wav_bytes(SECONDS))
    finally:
        await short.stop()


async def test_it_backs_a_sami_model_through_the_model_map(namespace: MusicSourceSeparate) -> None:
    result = await namespace.run(Call("t", "k", namespace.parse({"model": "2track_vocal"}), wav_bytes(SECONDS)))
    assert result.payload["backend_model"] == "tiny_mel:vocals" and result.data[:4] == b"RIFF"
    acc = await namespace.run(Call("t", "k", namespace.parse({"model": "2track_acc"}), wav_bytes(SECONDS)))
    assert acc.payload["cache_hit"] is True  # one separation serves both


def test_the_listing_shows_family_sources_rate_chunk_overlap_and_licence(family_store: Path) -> None:
    listing = create_namespace(config_for(family_store, SAMI_MODEL_MAP=MODEL_MAP, SAMI_JOB_MODEL="tiny_mel")
                               ).job_models()
    assert listing["default_model"] == "tiny_mel"
    entry = listing["models"][0]
    assert entry == {"name": "tiny_mel", "kind": "family",
                     "description": "mel_band_roformer imported from a checkpoint: 44100 Hz, chunks of 4416 "
                                    "samples, overlap 1 (licence: CC-BY-4.0)",
                     "sources": ["vocals"], "stems": ["vocals", "no_vocals"], "default_stems": ["vocals"],
                     "family": "mel_band_roformer", "licence": "CC-BY-4.0", "sample_rate": 44100,
                     "chunk_size": 4416, "num_overlap": 1}
    assert {model["name"] for model in listing["models"]} == {
        "tiny_mel", "2track_vocal", "2track_acc", "bs_4track_vocal", "bs_4track_acc"}


def test_the_separate_command_runs_it_by_name(family_store: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in os.environ if name.startswith("SAMI_")]:
        monkeypatch.delenv(name)
    song = tmp_path / "song.wav"
    song.write_bytes(wav_bytes(SECONDS))
    out = tmp_path / "separated"
    assert main(["separate", str(song), "-n", "tiny_mel", "--two-stems", "vocals", "-o", str(out),
                 "--model-dir", str(family_store), "--precision", "exact"]) == 0
    assert sorted(p.name for p in (out / "tiny_mel" / "song").iterdir()) == ["no_vocals.wav", "vocals.wav"]
