"""A job's model, stems and output: defaults, what is accepted, every refusal's code, the round trip; and
the listing of what can run, every entry of which is accepted."""

from __future__ import annotations

import importlib.machinery
import itertools
import shutil
import sys
import types
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import torch

from namespaces.music_source_separate.demo_store import HTDEMUCS_FT_SIGS, HTDEMUCS_SIG, SOURCES
from namespaces.music_source_separate.models.listing import StoreModels
from namespaces.music_source_separate.plugin import parse_target
from namespaces.music_source_separate.requests.job_params import DEFAULT_JOB_OUTPUT, JobParser, job_fields
from namespaces.music_source_separate.requests.params import CODEC_RATES, OutputSpec
from namespaces.music_source_separate.requests.sami_models import SAMI_MODELS
from namespaces.music_source_separate.settings import DEFAULT_MODEL_MAP
from sami_gateway.errors import Code, GatewayError
from sami_gateway.openapi import document as openapi
from sami_gateway.openapi.schemas import EXAMPLES

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


# The listing: what `parse` accepts now.

SAMI_NAMES = ["2track_vocal", "2track_acc", "bs_4track_vocal", "bs_4track_acc"]


@pytest.fixture
def store(model_store: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "store"
    shutil.copytree(model_store, copy)
    return copy


def names(listing: dict[str, Any]) -> list[str]:
    return [model["name"] for model in listing["models"]]


def test_the_demo_store_is_listed(parser: JobParser) -> None:
    listing = parser.models()
    assert listing["default_model"] == "htdemucs" and names(listing) == ["htdemucs", "htdemucs_ft", *SAMI_NAMES]
    four = list(SOURCES)
    for model in listing["models"][:2]:
        assert model["kind"] == "demucs" and model["sources"] == model["default_stems"] == four
        assert model["stems"] == four + [f"no_{source}" for source in four]
    assert "fine-tuned" in listing["models"][1]["description"]
    for model in listing["models"][2:]:
        sami = SAMI_MODELS[model["name"]]
        assert model["kind"] == "sami" and model["sources"] == ["vocals"] and model["stems"] == ["vocals", "no_vocals"]
        assert model["default_stems"] == (["vocals"] if sami.target.value == "vocals" else ["no_vocals"])
        assert model["description"].endswith(f"(runs {sami.backend})")
    assert listing["output"] == {
        "formats": ["wav", "flac", "mp3", "aac", "m4a"],
        "default": {"format": "wav", "sample_rate": 44100, "channels": 2},
        "sample_rate_range": {"min": 8000, "max": 48000},
        "sample_rates": {fmt: sorted(CODEC_RATES) for fmt in ("mp3", "aac", "m4a")}, "channels": [1, 2]}


def test_the_listing_matches_its_openapi_schema_and_example(parser: JobParser) -> None:
    listing = parser.models()
    jsonschema.validate(listing, openapi.schema("ModelList"))
    example = EXAMPLES["ModelList"]
    by_name = {model["name"]: model for model in listing["models"]}
    assert example["models"] == [by_name[model["name"]] for model in example["models"]]
    assert example["output"] == listing["output"] and example["default_model"] == listing["default_model"]


def test_every_listed_model_and_stem_and_output_is_accepted(parser: JobParser) -> None:
    listing = parser.models()
    assert parser.parse({}).model == listing["default_model"]
    for model in listing["models"]:
        name = model["name"]
        assert parser.parse({"model": name}).stems == tuple(model["default_stems"])
        assert parser.parse({"model": name, "stems": model["stems"]}).stems == tuple(model["stems"])
        for first, second in itertools.combinations(model["stems"], 2):
            assert parser.parse({"model": name, "stems": [second, first]}).stems == (second, first)
    out = listing["output"]
    rates = out["sample_rate_range"]
    for fmt in out["formats"]:
        for rate in out["sample_rates"].get(fmt, [rates["min"], rates["max"]]):
            for channels in out["channels"]:
                request = {"format": fmt, "sample_rate": rate, "channels": channels}
                assert parser.parse({"output": request}).output == OutputSpec(fmt, rate, channels)
    refusal(parser, {"output": {"sample_rate": rates["min"] - 1}})
    refusal(parser, {"output": {"sample_rate": rates["max"] + 1}})


def test_a_bag_missing_a_layer_is_not_listed_but_a_sami_name_on_its_present_specialist_is(store: Path) -> None:
    next(store.glob(f"{HTDEMUCS_FT_SIGS[0]}-*.th")).unlink()  # the drums specialist
    parser = JobParser(StoreModels(store), TARGETS)
    assert names(parser.models()) == ["htdemucs", *SAMI_NAMES]  # 2track_* run the vocals specialist alone
    next(store.glob(f"{HTDEMUCS_FT_SIGS[3]}-*.th")).unlink()  # the vocals one: seen at once
    assert names(parser.models()) == ["htdemucs", "bs_4track_vocal", "bs_4track_acc"]


def test_without_the_default_model_no_default_is_listed(store: Path) -> None:
    next(store.glob(f"{HTDEMUCS_SIG}-*.th")).unlink()
    listing = JobParser(StoreModels(store), TARGETS).models()
    assert listing["default_model"] is None and names(listing) == ["htdemucs_ft", "2track_vocal", "2track_acc"]


def test_a_configured_default_comes_first(model_store: Path) -> None:
    listing = JobParser(StoreModels(model_store), TARGETS, default_model="bs_4track_acc").models()
    assert listing["default_model"] == "bs_4track_acc"
    assert names(listing) == ["bs_4track_acc", "htdemucs", "htdemucs_ft", *SAMI_NAMES[:3]]


def test_a_bare_layer_is_listed_under_its_signature(store: Path) -> None:
    (store / "htdemucs.yaml").unlink()
    parser = JobParser(StoreModels(store), TARGETS)
    listing = parser.models()
    assert names(listing) == [HTDEMUCS_SIG, "htdemucs_ft", "2track_vocal", "2track_acc"]  # no htdemucs: no bs_4track
    assert listing["default_model"] is None and listing["models"][0]["sources"] == list(SOURCES)
    assert parser.parse({"model": HTDEMUCS_SIG, "stems": ["bass", "no_bass"]}).backend == HTDEMUCS_SIG


def test_the_sami_model_map_decides_what_a_sami_name_runs(model_store: Path) -> None:
    targets = {**TARGETS, "2track_vocal": ("htdemucs", None), "2track_acc": ("htdemucs_6s", None)}
    listing = JobParser(StoreModels(model_store), targets).models()
    assert "2track_acc" not in names(listing)  # its model is not in the store
    vocal = next(model for model in listing["models"] if model["name"] == "2track_vocal")
    assert vocal["description"].endswith("(runs htdemucs)")


def test_a_store_model_named_as_a_sami_model_is_listed_once(store: Path) -> None:
    shutil.copy(store / "htdemucs.yaml", store / "2track_acc.yaml")
    listing = JobParser(StoreModels(store), TARGETS).models()
    assert names(listing).count("2track_acc") == 1
    assert next(m for m in listing["models"] if m["name"] == "2track_acc")["kind"] == "sami"  # as parse reads it


@pytest.mark.parametrize("has_diffq", [False, True])
def test_a_quantized_model_is_listed_only_with_diffq(store: Path, monkeypatch: pytest.MonkeyPatch,
                                                     has_diffq: bool) -> None:
    diffq = types.ModuleType("diffq")
    diffq.__spec__ = importlib.machinery.ModuleSpec("diffq", None)
    monkeypatch.setitem(sys.modules, "diffq", diffq if has_diffq else None)
    shutil.copy(store / "htdemucs.yaml", store / "htdemucs_q.yaml")  # Demucs's name for a quantized bag
    parser = JobParser(StoreModels(store), TARGETS)
    assert ("htdemucs_q" in names(parser.models())) is has_diffq
    if has_diffq:
        assert parser.parse({"model": "htdemucs_q"}).model == "htdemucs_q"
    else:
        assert "diffq" in refusal(parser, {"model": "htdemucs_q"}).detail


def test_listing_loads_no_model(parser: JobParser, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("torch.load while listing models")

    monkeypatch.setattr(torch, "load", refuse)
    assert len(parser.models()["models"]) == 6


def test_a_listing_lists_the_store_once(parser: JobParser, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Demucs models and the models of the SAMI names come from one listing of the directory."""
    scans: list[Path] = []
    real = StoreModels._list
    monkeypatch.setattr(StoreModels, "_list", lambda self: scans.append(self.root) or real(self))
    assert len(parser.models()["models"]) == 6
    assert len(scans) == 1


@pytest.mark.parametrize("text", ["", "3\n"])
def test_a_yaml_file_that_is_no_bag_is_not_listed_and_refused_clearly(store: Path, text: str) -> None:
    (store / "x.yaml").write_text(text)
    parser = JobParser(StoreModels(store), TARGETS)
    assert "x" not in names(parser.models())
    assert "x.yaml is not a bag file" in refusal(parser, {"model": "x"}).detail
