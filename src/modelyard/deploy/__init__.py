"""The deploy loop: package a model, test the artifact on a real server, publish it.

    package(Path("models/add_sub"), PackageOptions(output=Path("dist")))  # -> add_sub_1.tar.gz
    run_tests([Path("dist/add_sub_1.tar.gz")], TestOptions())             # a real server
    push(Path("dist/add_sub_1.tar.gz"), "s3://bucket/staging")            # atomic, immutable
    push(Path("dist/pipeline_1.tar.gz"), "s3://bucket/staging")           # + each step's own
    promote("add_sub", 1, "s3://bucket/staging", "s3://bucket/production")
    rollback("add_sub", "s3://bucket/production")                          # retire, never delete
    scaffold(Path("my-models"))                                           # `modelyard init`

Below ``cli`` and above ``testing``: it uses the store (writes), the repository layer (config
checks), the Python environments (packing) and the test harness (a real server). It prints
nothing: results and progress go back to the caller (``cli/`` renders them with rich).
docs/deploy.md describes the loop, the test-case schema and the store layout.
"""

from modelyard.deploy.artifact import ArtifactError, Manifest, read_manifest, verify_artifact
from modelyard.deploy.bundle import BundlePart, composing_models, split_bundle
from modelyard.deploy.package import PackageError, PackageOptions, PackageResult, package
from modelyard.deploy.publish import (
    ChecksumMismatch,
    NothingToRollBack,
    PublishResult,
    RollbackResult,
    StoredVersion,
    VersionExists,
    list_store,
    promote,
    push,
    rollback,
)
from modelyard.deploy.runner import CaseResult, TargetResult, TestOptions, run_tests

__all__ = [
    "ArtifactError",
    "BundlePart",
    "CaseResult",
    "ChecksumMismatch",
    "Manifest",
    "NothingToRollBack",
    "PackageError",
    "PackageOptions",
    "PackageResult",
    "PublishResult",
    "RollbackResult",
    "StoredVersion",
    "TargetResult",
    "TestOptions",
    "VersionExists",
    "composing_models",
    "list_store",
    "package",
    "promote",
    "push",
    "read_manifest",
    "rollback",
    "run_tests",
    "split_bundle",
    "verify_artifact",
]
