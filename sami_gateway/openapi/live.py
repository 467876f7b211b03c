"""A gateway's own OpenAPI document: the job request schemas narrowed to what it accepts now (the
models and stems its job namespace lists, the output it encodes, whether it signs webhooks)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .schemas import COPIES_REQUEST, STEMS_REQUEST, Schema, nullable

NO_WEBHOOKS: Schema = {"type": "null", "description": "this gateway signs no webhooks (no `SAMI_WEBHOOK_SECRET`, "
                                                      "no appkey's `webhook_secret`): a URL is refused"}


@dataclass(frozen=True)
class Accepted:
    """What a gateway's job requests may ask for now."""

    listing: Mapping[str, Any]  # the job namespace's `job_models()`, as `GET /api/v1/models` answers it
    webhooks: bool  # some appkey's webhooks can be signed


def narrowed(schemas: Mapping[str, Schema], accepted: Accepted) -> dict[str, Schema]:
    """The component `schemas` with `JobRequest`, `JobParams` and `OutputRequest` narrowed to `accepted`."""
    out = dict(schemas)
    choices = _model_choices(accepted.listing)
    for name in ("JobRequest", "JobParams"):
        properties = dict(schemas[name]["properties"])
        properties.update(_fields(accepted))
        out[name] = {**schemas[name], "properties": properties, "anyOf": choices}
    out["OutputRequest"] = output_request(accepted.listing["output"], schemas["OutputRequest"])
    return out


def _fields(accepted: Accepted) -> dict[str, Schema]:
    """The fields' own schemas: any model listed, any stem of one, each read against the model below."""
    models = accepted.listing["models"]
    stems = list(dict.fromkeys(stem for model in models for stem in model["stems"]))
    fields: dict[str, Schema] = {
        "model": {"enum": [*(model["name"] for model in models), "", None],
                  "description": "a model of `GET /api/v1/models`; empty or null: its `default_model`"},
        "stems": nullable({**STEMS_REQUEST, "items": {"enum": stems},
                           "description": "stems of the model (its `stems` in `GET /api/v1/models`), each any "
                                          "number of times; null: its `default_stems`"}),
    }
    if not accepted.webhooks:
        fields["webhook_url"] = NO_WEBHOOKS
    return fields


def _model_choices(listing: Mapping[str, Any]) -> list[Any]:
    """One choice per set of models with the same stems: `model` names one of them (the default
    model's also when it is absent, empty or null), and `stems` and `copy_results_to` name only
    their stems. No choice at all (`false`) while no model can run."""
    groups: dict[tuple[tuple[str, ...], tuple[str, ...]], list[str]] = {}
    for model in listing["models"]:
        groups.setdefault((tuple(model["stems"]), tuple(model["default_stems"])), []).append(model["name"])
    choices: list[Any] = [{"required": ["model"], "properties": {"model": {"enum": names}},
                           **_stem_rules(stems, default)} for (stems, default), names in groups.items()]
    default_model = next((m for m in listing["models"] if m["name"] == listing["default_model"]), None)
    if default_model is not None:
        choices.append({"properties": {"model": {"enum": ["", None]}},
                        **_stem_rules(default_model["stems"], default_model["default_stems"])})
    return choices or [False]


def _stem_rules(stems: Sequence[str], default: Sequence[str]) -> Schema:
    """`stems` among `stems` (absent or null: `default`); `copy_results_to` only for stems the job makes.

    With `stems` given, that a copied stem is among them is said in words only: as JSON Schema it is
    one `if`/`then` per stem, whose expansion into alternatives (2 to the number of stems) is more than
    schema tools can generate values from."""
    return {"anyOf": [
        {"properties": {"stems": {"type": "null"}, "copy_results_to": _copies(default)}},
        {"required": ["stems"],
         "properties": {"stems": {**STEMS_REQUEST, "items": {"enum": list(stems)}}, "copy_results_to": _copies(stems)}},
    ]}


def _copies(stems: Sequence[str]) -> Schema:
    return nullable({**COPIES_REQUEST, "propertyNames": {"enum": list(stems)}})


def output_request(options: Mapping[str, Any], generic: Schema) -> Schema:
    """`output` as the listing's options allow: any format, rate in range and channels; a format with
    rates of its own (its encoder's) only at those. An absent, empty or null field is the default's."""
    default = options["default"]
    rate = {"type": "integer", "minimum": options["sample_rate_range"]["min"],
            "maximum": options["sample_rate_range"]["max"]}
    groups: dict[tuple[int, ...] | None, list[str]] = {}
    for fmt in options["formats"]:
        rates = options["sample_rates"].get(fmt)
        groups.setdefault(None if rates is None else tuple(rates), []).append(fmt)
    choices = []
    for rates, formats in groups.items():
        choice: Schema = {"properties": {"format": {"enum": formats}}, "required": ["format"]}
        if default["format"] in formats:  # absent, empty or null: the default format
            choice = {"properties": {"format": {"enum": [*formats, "", None]}}}
        if rates is not None:
            choice["properties"]["sample_rate"] = {"enum": [*rates, *([None] if default["sample_rate"] in rates
                                                                      else [])]}
            if default["sample_rate"] not in rates:
                choice["required"] = [*choice.get("required", []), "sample_rate"]
        choices.append(choice)
    properties = {
        "format": {**generic["properties"]["format"], "enum": [*options["formats"], "", None]},
        "sample_rate": nullable({**rate, "description": "Hz; null: the default"}),
        "channels": {"enum": [*options["channels"], None], "description": "null: the default"},
    }
    return {**generic, "properties": properties, "anyOf": choices}
