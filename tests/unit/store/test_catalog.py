"""The identity rules: folders, artifacts, names with underscores, merging, what governs."""

from __future__ import annotations

import logging

import pytest

from modelyard.store import StoreObject, catalog, parse_artifact_name


def objs(*keys: str) -> list[StoreObject]:
    return [StoreObject(key, 10, f"etag-{key}") for key in keys]


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("screen_detection_pipeline_3.tar.gz", ("screen_detection_pipeline", 3)),
        ("m_0.tar.gz", ("m", 0)),
        ("a__12.tar.gz", ("a_", 12)),
        ("m_1_2.tar.gz", ("m_1", 2)),
        ("m_v2.tar.gz", None),
        ("m_.tar.gz", None),
        ("_3.tar.gz", None),
        ("m3.tar.gz", None),
        ("m_03.tar.gz", None),  # leading zeros are not versions, as in Triton
        ("m_-1.tar.gz", None),
        ("m_1.tgz", None),
        ("m_99999999999999999999.tar.gz", None),  # past int64
        ("sub/m_1.tar.gz", None),
    ],
)
def test_parse_artifact_name(key: str, expected: tuple[str, int] | None) -> None:
    assert parse_artifact_name(key) == expected


def test_folder_layout() -> None:
    models = catalog(
        objs(
            "add_sub/config.pbtxt",
            "add_sub/1/model.onnx",
            "add_sub/2/model.onnx",
            "add_sub/2/extra/weights.bin",
            "add_sub/labels.txt",
            "add_sub/warmup/sample.bin",
            "add_sub/01/model.onnx",  # Triton skips it (leading zero): shared, copied as-is
            "README.md",  # files at the root are ignored
        )
    )
    assert list(models) == ["add_sub"]
    model = models["add_sub"]
    assert model.has_folder
    assert list(model.versions) == [1, 2]
    assert model.versions[2].kind == "folder"
    assert [o.key for o in model.versions[2].files] == [
        "add_sub/2/extra/weights.bin",
        "add_sub/2/model.onnx",
    ]
    assert [o.key for o in model.shared] == [
        "add_sub/01/model.onnx",
        "add_sub/config.pbtxt",
        "add_sub/labels.txt",
        "add_sub/warmup/sample.bin",
    ]
    assert model.latest == 2
    assert model.governing is model.versions[2]


def test_artifacts_with_underscores_in_names() -> None:
    models = catalog(
        objs(
            "screen_detection_pipeline_3.tar.gz",
            "screen_detection_pipeline_10.tar.gz",
            "screen_detection_1.tar.gz",
        )
    )
    assert list(models) == ["screen_detection", "screen_detection_pipeline"]
    pipeline = models["screen_detection_pipeline"]
    assert list(pipeline.versions) == [3, 10]  # numeric order, not string order
    assert pipeline.governing is not None
    assert pipeline.governing.artifact == StoreObject(
        "screen_detection_pipeline_10.tar.gz", 10, "etag-screen_detection_pipeline_10.tar.gz"
    )
    assert not pipeline.has_folder
    assert pipeline.shared == ()


def test_unparsable_artifacts_are_skipped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="modelyard.store.catalog"):
        models = catalog(objs("m_latest.tar.gz", "nounderscore.tar.gz", "m_2.tar.gz"))
    assert list(models) == ["m"]
    assert list(models["m"].versions) == [2]
    assert "m_latest.tar.gz" in caplog.text
    assert "nounderscore.tar.gz" in caplog.text


def test_folder_and_artifacts_merge_and_the_artifact_wins(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="modelyard.store.catalog"):
        models = catalog(
            objs(
                "m/config.pbtxt",
                "m/1/model.onnx",
                "m/2/model.onnx",
                "m_2.tar.gz",
                "m_3.tar.gz",
            )
        )
    model = models["m"]
    assert list(model.versions) == [1, 2, 3]
    assert model.versions[1].kind == "folder"
    assert model.versions[2].kind == "artifact"
    assert model.versions[3].kind == "artifact"
    assert model.governing is model.versions[3]
    assert "version 2 is both a folder and the artifact 'm_2.tar.gz'" in caplog.text


def test_newest_folder_version_governs_over_older_artifacts() -> None:
    model = catalog(objs("m_1.tar.gz", "m/config.pbtxt", "m/5/model.onnx"))["m"]
    assert model.governing is model.versions[5]
    assert model.governing.kind == "folder"


def test_folder_without_versions_is_a_model() -> None:
    # Triton lists it and fails its load for want of a version; so do we
    model = catalog(objs("m/config.pbtxt"))["m"]
    assert model.versions == {}
    assert model.latest is None
    assert model.governing is None


def test_unsafe_keys_are_skipped(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="modelyard.store.catalog"):
        models = catalog(objs("m/1/../../../etc/passwd", "m//1/x", "m/./1/x", "ok/1/model.onnx"))
    assert list(models) == ["ok"]
    assert "m/1/../../../etc/passwd" in caplog.text


def test_models_ordered_by_name_bytes() -> None:
    assert list(catalog(objs("b/1/x", "B/1/x", "a_1.tar.gz", ".hidden/1/x"))) == [
        ".hidden",
        "B",
        "a",
        "b",
    ]


def test_size_is_the_stored_bytes() -> None:
    model = catalog(objs("m/config.pbtxt", "m/1/a", "m/1/b", "m_2.tar.gz"))["m"]
    assert model.size == 40
