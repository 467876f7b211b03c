"""The namespace's `sami-gateway` commands: `models list | fetch | import | info | remove`, `separate`.

Loaded by every `sami-gateway` command line: nothing heavy (torch, demucs) is imported
here at module level, only inside the handlers.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tqdm import tqdm

    from .models.repository import ModelRepository
    from .settings import SeparationSettings

Flags = dict[str, Any]
Action = Callable[["ModelRepository", "SeparationSettings", Flags], int]


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this namespace's commands to `sami-gateway`."""
    _register_models(subparsers)
    _register_separate(subparsers)


def _register_separate(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from .audio.formats import FORMATS

    parser = subparsers.add_parser("separate", help="separate audio files into stems",
                                   description="Separate audio files into stems, as `demucs` does.")
    parser.add_argument("files", nargs="+", metavar="FILE")
    parser.add_argument("-m", "-n", "--model", "--name", dest="model", default="htdemucs",
                        help="model name (default htdemucs)")
    parser.add_argument("--two-stems", metavar="STEM", help="write STEM and no_STEM only")
    parser.add_argument("-o", "--out", default="separated", help="output folder (default separated)")
    parser.add_argument("--format", choices=FORMATS, default="wav")
    parser.add_argument("--shifts", type=int, default=1, help="random shifts averaged (Demucs's default 1)")
    parser.add_argument("--precision", choices=("exact", "fast"), help="default: SAMI_PRECISION")
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    _store_flags(parser, None)
    parser.set_defaults(func=_with_repository(_separate))


def _register_models(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    models = subparsers.add_parser("models", help="manage the model store (Demucs's layout)",
                                   description="Manage the model store (Demucs's layout).")
    _store_flags(models, argparse.SUPPRESS)  # accepted before or after the action
    actions = models.add_subparsers(dest="action", required=True)
    common = argparse.ArgumentParser(add_help=False)
    _store_flags(common, argparse.SUPPRESS)
    specs: list[tuple[str, str, Action]] = [
        ("list", "the models that can be fetched or are in the store", _list),
        ("fetch", "download models (verified) into the store", _fetch),
        ("import", "copy <sig>-<sha256 prefix>.th and <name>.yaml files into the store; or, with "
                   "NAME --checkpoint FILE --config FILE.yaml, an MSST checkpoint (BS-RoFormer, Mel-Band "
                   "RoFormer, MDX23C)", _import),
        ("info", "the store's directory and the models it holds", _info),
        ("remove", "delete models from the store (layers other models use are kept)", _remove),
    ]
    for name, help_text, action in specs:
        if name == "import":  # its own --config: the model's YAML with --checkpoint
            _register_import(actions, help_text, action)
            continue
        parser = actions.add_parser(name, parents=[common], help=help_text, description=help_text)
        if name in ("fetch", "remove"):
            parser.add_argument("names", nargs="+", metavar="NAME")
        parser.set_defaults(func=_with_repository(action))


def _register_import(actions: argparse._SubParsersAction, help_text: str,  # type: ignore[type-arg]
                     action: Action) -> None:
    parser = actions.add_parser("import", help=help_text, description=help_text)
    parser.add_argument("--model-dir", dest="model_dir", default=argparse.SUPPRESS,
                        help="model store (env SAMI_MODEL_DIR)")
    parser.add_argument("--model-url", dest="model_url", default=argparse.SUPPRESS,
                        help="where layers are downloaded from (env SAMI_MODEL_URL)")
    parser.add_argument("--config", dest="import_config",
                        help="with --checkpoint: the model's MSST YAML config; otherwise a TOML file (as SAMI_CONFIG)")
    parser.add_argument("--checkpoint", help="an MSST checkpoint (a .ckpt/.pth state dict) to import as NAME")
    parser.add_argument("--licence", default="unknown", help="the checkpoint's licence, shown with the model "
                                                            "(default unknown)")
    parser.add_argument("--model-type", dest="model_type",
                        help="bs_roformer, mel_band_roformer or mdx23c, where the config has no training.model_type")
    parser.add_argument("files", nargs="+", metavar="FILE", help="files to copy, or the NAME of a checkpoint")
    run = _with_repository(action)

    def handler(flags: Flags) -> int:
        if flags.get("checkpoint") is None and flags.get("import_config") is not None:
            flags["config"] = flags.pop("import_config")  # no checkpoint: --config is the gateway's TOML
        return run(flags)
    parser.set_defaults(func=handler)


def _store_flags(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument("--model-dir", dest="model_dir", default=default,
                        help="model store (env SAMI_MODEL_DIR)")
    parser.add_argument("--model-url", dest="model_url", default=default,
                        help="where layers are downloaded from (env SAMI_MODEL_URL)")
    parser.add_argument("--config", default=default, help="TOML file (as SAMI_CONFIG)")


def _with_repository(action: Action) -> Callable[[Flags], int]:
    """The handler: this namespace's settings from flags, file and environment, then `action`;
    store errors exit 2."""
    def handler(flags: Flags) -> int:
        from sami_gateway.config import load_config
        from sami_gateway.runtime import heap

        from .models.layout import ModelStoreError
        from .models.repository import ModelRepository
        from .settings import SETTINGS

        given = {key: flags.pop(key, None) for key in ("config", "model_dir", "model_url")}
        try:
            config = load_config(given, need_secret=False)
            if config.retain_freed_memory:  # while this is the only thread, as `serve` does (`runtime.heap`)
                heap.retain_freed_memory()
            settings = config.sections[SETTINGS.name]
            return action(ModelRepository(settings.model_dir, settings.model_url), settings, flags)
        except ModelStoreError as exc:
            print(f"sami-gateway: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:  # a download in progress left nothing behind
            print("sami-gateway: interrupted", file=sys.stderr)
            return 130
    return handler


def _size(size_bytes: int) -> str:
    value = float(size_bytes)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.2f} GiB"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                     for row in [header, *rows])


def _list(repository: ModelRepository, settings: SeparationSettings, flags: Flags) -> int:
    cache = repository.get_cache_info()
    rows = [(name, "yes" if model["cached"] else "no",
             _size(cache[name]["size_bytes"]) if name in cache else "-", model["description"])
            for name, model in repository.list_models().items()]
    print(_table(("NAME", "CACHED", "SIZE", "DESCRIPTION"), rows))
    return 0


class _Bars:
    """A tqdm bar per layer, in bytes, driven by the progress events."""

    def __init__(self) -> None:
        self._bar: tqdm[Any] | None = None

    def __call__(self, event: str, data: dict[str, Any]) -> None:
        from tqdm import tqdm

        label = f"{data['model_name']} {data.get('layer_index', 0)}/{data['total_layers']}"
        if event == "layer_start":
            self.close()
            self._bar = tqdm(total=data["layer_size_bytes"] or None, desc=label, unit="B",
                             unit_scale=True, unit_divisor=1024, file=sys.stderr, leave=True)
        elif event == "layer_progress" and self._bar is not None:
            self._bar.update(data["downloaded_bytes"] - self._bar.n)
        elif event == "layer_complete" and self._bar is not None:
            self._bar.set_postfix_str("cached" if data.get("cached") else "downloaded")
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _fetch(repository: ModelRepository, settings: SeparationSettings, flags: Flags) -> int:
    for name in flags["names"]:
        bars = _Bars()
        try:
            paths = repository.fetch(name, progress_callback=bars)
        finally:
            bars.close()
        print(f"{name}: {len(paths) - 1} layers in {repository.get_cache_dir()}")
    return 0


def _import(repository: ModelRepository, settings: SeparationSettings, flags: Flags) -> int:
    if flags.get("checkpoint") is not None:
        return _import_checkpoint(repository, flags)
    for path in repository.import_files(flags["files"]):
        print(f"imported {path}")
    return 0


def _import_checkpoint(repository: ModelRepository, flags: Flags) -> int:
    if len(flags["files"]) != 1 or flags.get("import_config") is None:
        print("sami-gateway: models import NAME --checkpoint FILE --config FILE.yaml [--licence X]", file=sys.stderr)
        return 2
    entry = repository.import_family(flags["files"][0], flags["checkpoint"], flags["import_config"],
                                     flags["licence"], flags.get("model_type"))
    summary = entry.summary()
    print(f"imported {entry.name}: {summary['family']}, sources {', '.join(summary['sources'])}, "
          f"{summary['sample_rate']} Hz, chunk {summary['chunk_size']}, overlap {summary['num_overlap']}, "
          f"licence {summary['licence']}")
    return 0


def _info(repository: ModelRepository, settings: SeparationSettings, flags: Flags) -> int:
    print(f"model store: {repository.get_cache_dir()}")
    rows = [(name, str(len(model["layers"])), _size(model["size_bytes"]))
            for name, model in repository.get_cache_info().items()]
    print(_table(("NAME", "LAYERS", "SIZE"), rows) if rows else "no complete model in the store")
    return 0


def _remove(repository: ModelRepository, settings: SeparationSettings, flags: Flags) -> int:
    for name in flags["names"]:
        removed = repository.remove_model(name)
        print(f"removed {name}" if removed else f"{name} was not in the store")
    return 0


class _ChunkBar:
    """A tqdm bar over the chunks of one file, driven by the processing events."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._bar: tqdm[Any] | None = None

    def __call__(self, event: str, data: dict[str, Any]) -> None:
        from tqdm import tqdm

        if event == "processing_start":
            self._bar = tqdm(total=data["total_chunks"], desc=self.label, unit="chunk", file=sys.stderr)
        elif event == "chunk_complete" and self._bar is not None:
            self._bar.update(data["completed_chunks"] - self._bar.n)
        elif event == "processing_complete" and self._bar is not None:
            self._bar.close()


def _separate(repository: ModelRepository, settings: SeparationSettings, flags: Flags) -> int:
    from pathlib import Path

    import torch

    from .audio.errors import AudioError
    from .engine import native
    from .separator import Separator, default_device

    precision = flags.get("precision") or settings.precision
    device = torch.device(flags.get("device") or default_device())
    native.configure(settings.kernel_dir, settings.compiler or None)
    separator = Separator(flags["model"], str(device), repository=repository, precision=precision)
    two_stems = flags.get("two_stems")
    if two_stems is not None and two_stems not in separator.sources:
        print(f"sami-gateway: {flags['model']} has no stem {two_stems!r} ({', '.join(separator.sources)})",
              file=sys.stderr)
        return 2
    for file in flags["files"]:
        track = Path(file)
        try:
            sources = separator.separate(track, shifts=flags["shifts"], progress_callback=_ChunkBar(track.name))
        except (OSError, AudioError) as exc:
            print(f"sami-gateway: {track}: {exc}", file=sys.stderr)
            return 2
        if two_stems is not None:
            sources = sources.isolate_stem(two_stems)
        folder = Path(flags["out"]) / flags["model"] / track.stem
        for stem in sources.sources:
            print(sources.export_stem(stem, folder / f"{stem}.{flags['format']}", format=flags["format"]))
    return 0
