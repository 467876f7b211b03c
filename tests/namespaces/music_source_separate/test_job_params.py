"""A job's model, stems and output: defaults, what is accepted, every refusal's code, the round trip."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from namespaces.music_source_separate.demo_store import HTDEMUCS_FT_SIGS, SOURCES
from namespaces.music_source_separate.job_params import DEFAULT_JOB_OUTPUT, JobParser, job_fields
from namespaces.music_source_separate.params import OutputSpec
from namespaces.music_source_separate.plugin import parse_target
from namespaces.music_source_separate.sami_models import SAMI_MODELS
from namespaces.music_source_separate.settings import DEFAULT_MODEL_MAP
from namespaces.music_source_separate.store_models import StoreModels
from sami_gateway.errors import Code, GatewayError

TARGETS = {name: parse_target(spec) for name, spec in DEFAULT_MODEL_MAP.items()}


@pytest.fixture
def parser(model_store: Path) -> JobParser:
    return JobParser(StoreModels(model_store), TARGETS)


def refusal(parser: JobParser, request: dict[str, Any]) -> GatewayError:
    with pytest.raises(GatewayError) as refused:
        parser.parse(request)
    assert refused.value.code is Code.ILLEGAL_PAYLOAD and refused.value.status.http == 400
    return refused.value


def test_defaults(parser: JobParser) -> None:
    params = parser.parse({"input": {"url": "https://example.com/a.mp3"}, "name": "the gateway's fields"})
    assert (params.model, params.backend, params.only_load, params.sami) == ("htdemucs", "htdemucs", None, None)
    assert params.stems == SOURCES and params.output == OutputSpec("wav", 44100, 2) == DEFAULT_JOB_OUTPUT
    assert parser.parse({"model": None, "stems": None, "output": None}) == params


@pytest.mark.parametrize(("model", "stems"), [("2track_vocal", ("vocals",)), ("2track_acc", ("no_vocals",)),
                                              ("bs_4track_vocal", ("vocals",)), ("bs_4track_acc", ("no_vocals",))])
def test_sami_names_run_as_invoke_runs_them(parser: JobParser, model: str, stems: tuple[str, ...]) -> None:
    params = parser.parse({"model": model})
    assert params.sami is SAMI_MODELS[model] and params.stems == stems
    assert (params.backend, params.only_load) == TARGETS[model]
    assert parser.parse({"model": model, "stems": ["no_vocals", "vocals"]}).stems == ("no_vocals", "vocals")


@pytest.mark.parametrize(("model", "stems", "only_load"), [
    ("htdemucs_ft", ["vocals"], "vocals"), ("htdemucs_ft", ["vocals", "no_vocals"], "vocals"),
    ("htdemucs_ft", ["no_drums"], "drums"), ("htdemucs_ft", ["vocals", "drums"], None),
    ("htdemucs_ft", None, None), ("htdemucs", ["vocals"], None),
])
def test_one_source_of_a_bag_runs_its_specialist(parser: JobParser, model: str, stems: list[str] | None,
                                                 only_load: str | None) -> None:
    assert parser.parse({"model": model, "stems": stems}).only_load == only_load


def test_accepted_spellings(parser: JobParser) -> None:
    params = parser.parse({"stems": ["vocals", "vocals", "no_vocals"],
                           "output": {"format": "FLAC", "sample_rate": 22050.0, "channels": 1}})
    assert params.stems == ("vocals", "no_vocals") and params.output == OutputSpec("flac", 22050, 1)
    assert parser.parse({"output": {"sample_rate": 44000}}).output == OutputSpec("wav", 44000, 2)
    assert parser.parse({"output": {"format": "aac", "sample_rate": 48000}}).output.format == "aac"


@pytest.mark.parametrize("request_", [
    {"model": 5}, {"model": ["htdemucs"]}, {"model": "../htdemucs"},
    {"stems": "vocals"}, {"stems": []}, {"stems": [1]}, {"stems": ["vocals", None]}, {"stems": {"vocals": 1}},
    {"stems": ["guitar"]}, {"stems": ["no_no_vocals"]}, {"stems": ["Vocals"]},
    {"model": "2track_acc", "stems": ["drums"]}, {"model": "bs_4track_vocal", "stems": ["accompaniment"]},
    {"output": "wav"}, {"output": ["wav"]}, {"output": {"fmt": "wav"}}, {"output": {"format": "ogg"}},
    {"output": {"format": 3}}, {"output": {"sample_rate": 7999}}, {"output": {"sample_rate": 48001}},
    {"output": {"sample_rate": "44100"}}, {"output": {"sample_rate": True}}, {"output": {"sample_rate": 44100.5}},
    {"output": {"format": "mp3", "sample_rate": 44000}}, {"output": {"format": "aac", "sample_rate": 9000}},
    {"output": {"channels": 0}}, {"output": {"channels": 3}}, {"output": {"channels": "2"}},
])
def test_refusals(parser: JobParser, request_: dict[str, Any]) -> None:
    refusal(parser, request_)


def test_an_unknown_stem_is_answered_with_the_valid_ones(parser: JobParser) -> None:
    detail = refusal(parser, {"stems": ["vocals", "guitar"]}).detail
    assert "guitar" in detail and "no_drums" in detail and "vocals" in detail


def test_a_model_of_the_catalogue_not_in_the_store_names_the_fetch_command(parser: JobParser) -> None:
    assert "`sami-gateway models fetch htdemucs_6s`" in refusal(parser, {"model": "htdemucs_6s"}).detail


def test_a_model_of_no_catalogue_names_the_import_command(parser: JobParser) -> None:
    detail = refusal(parser, {"model": "my_model"}).detail
    assert "`sami-gateway models import FILE...`" in detail and "my_model.yaml" in detail


def test_a_bag_missing_layers_for_what_is_asked(model_store: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    shutil.copytree(model_store, store)
    next(store.glob(f"{HTDEMUCS_FT_SIGS[0]}-*.th")).unlink()  # the drums specialist
    parser = JobParser(StoreModels(store), TARGETS)
    assert parser.parse({"model": "htdemucs_ft", "stems": ["vocals"]}).only_load == "vocals"
    for stems in (["drums"], None):
        assert "models fetch htdemucs_ft" in refusal(parser, {"model": "htdemucs_ft", "stems": stems}).detail


@pytest.mark.parametrize("request_", [
    {}, {"model": "htdemucs_ft", "stems": ["no_vocals"]}, {"model": "2track_acc", "stems": ["vocals", "no_vocals"]},
    {"model": "bs_4track_vocal", "output": {"format": "mp3", "sample_rate": 22050, "channels": 1}},
    {"stems": ["bass", "no_bass", "bass"], "output": {"format": "FLAC", "sample_rate": 16000.0}},
])
def test_job_fields_round_trip(parser: JobParser, request_: dict[str, Any]) -> None:
    params = parser.parse(request_)
    fields = job_fields(params)
    assert set(fields) == {"model", "stems", "output"} and fields["stems"] == list(params.stems)
    assert parser.parse(fields) == params
    assert job_fields(parser.parse(fields)) == fields


def test_parsing_loads_no_model(parser: JobParser, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("torch.load while parsing a job")

    monkeypatch.setattr(torch, "load", refuse)
    assert parser.parse({"model": "htdemucs_ft", "stems": ["vocals"]}).only_load == "vocals"


def test_the_default_model_is_configurable(model_store: Path) -> None:
    parser = JobParser(StoreModels(model_store), TARGETS, default_model="2track_acc")
    params = parser.parse({})
    assert params.model == "2track_acc" and params.stems == ("no_vocals",)
