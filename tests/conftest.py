"""Shared pytest fixtures."""

import os
import pathlib
import shutil
import sys

import pytest
import small_model_spec as spec

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


# The files that take longest, longest first: the two workers (`-n 2 --dist loadfile`) take
# files in collection order, so these go first and the short ones even out the end.
LONGEST_FIRST = (
    "test_binaries.py",
    "test_layers.py",
    "test_training.py",
    "test_video_features.py",
    "test_export.py",
    "test_parallel_training.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: index for index, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: keeps the rest


@pytest.fixture(scope="session")
def reference_dir() -> pathlib.Path:
    """Reference data: `$VIDEO_RELOC_REFERENCE_DIR`, default `<repo>/../shared/reference`.

    Tests that use it are skipped when it is absent.
    """
    path = pathlib.Path(
        os.environ.get("VIDEO_RELOC_REFERENCE_DIR", REPO_ROOT.parent / "shared" / "reference")
    )
    if not (path / "video_reloc_release" / "length.json").exists():
        pytest.skip(
            f"reference data not found at {path} (set VIDEO_RELOC_REFERENCE_DIR to the folder "
            "holding activitynet/ and video_reloc_release/)"
        )
    return path


# The small untrained model the export, serving and relocalization tests share, and its export
# without XLA (made once per test process; tests copy it into version folders of their own).
@pytest.fixture(scope="session")
def small_model():
    """`build_model` with the sizes of `small_model_spec`, seed 0; tests must not change its
    weights."""
    from video_reloc import build_model

    return build_model(spec.FEATURE_DIM, units=spec.UNITS, bilinear_rank=spec.BILINEAR_RANK, seed=0)


@pytest.fixture(scope="session")
def small_export(small_model, tmp_path_factory) -> pathlib.Path:
    """`small_model` as a SavedModel without XLA (default warm-up file): a version folder."""
    from video_reloc.export import export_saved_model

    base = tmp_path_factory.mktemp("small_export") / "reloc"
    return export_saved_model(small_model, base, jit_compile=False)


@pytest.fixture(scope="session")
def copy_small_export(small_export):
    """`copy(base, *versions)`: copies of `small_export` as those version folders of `base`."""

    def copy(base: pathlib.Path, *versions: int) -> pathlib.Path:
        for version in versions:
            shutil.copytree(small_export, base / str(version))
        return base

    return copy
