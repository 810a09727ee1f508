"""Shared pytest fixtures."""

import os
import pathlib
import sys

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


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
