"""The files of a store directory: layers by signature, bag files, replacing a layer's other versions."""

from __future__ import annotations

from pathlib import Path

from namespaces.music_source_separate.models.files import StoreFiles


def test_an_absent_store_holds_nothing(tmp_path: Path) -> None:
    files = StoreFiles(tmp_path / "absent")
    assert files.layers() == {} and files.bag_names() == [] and not files.has_bag("htdemucs")


def test_layers_bags_and_what_is_held(tmp_path: Path) -> None:
    for name in ("aa-00000001.th", "aa-00000002.th", "bb.th", "mine.yaml", "-bad.yaml", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    files = StoreFiles(tmp_path)
    layers = files.layers()
    assert {sig: [p.name for p in paths] for sig, paths in layers.items()} == {
        "aa": ["aa-00000001.th", "aa-00000002.th"], "bb": ["bb.th"]}
    assert all(path.parent == tmp_path.resolve() for paths in layers.values() for path in paths)
    assert files.bag_names() == ["mine"] and files.bag_path("mine") == tmp_path / "mine.yaml"
    assert files.holds("mine", ("aa", "bb"), layers)
    assert not files.holds("mine", ("aa", "cc"), layers) and not files.holds("other", ("aa",), layers)


def test_replace_others_keeps_only_the_new_version(tmp_path: Path) -> None:
    for name in ("aa-00000001.th", "aa-00000002.th", "ab-00000003.th"):
        (tmp_path / name).write_bytes(b"x")
    StoreFiles(tmp_path).replace_others("aa", tmp_path / "aa-00000002.th")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["aa-00000002.th", "ab-00000003.th"]
