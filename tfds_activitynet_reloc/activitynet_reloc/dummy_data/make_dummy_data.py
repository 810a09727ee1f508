"""Writes the dummy manual dir of config `c3d` (the files next to this script).

Usage: python make_dummy_data.py [REFERENCE_DIR]   (default: <repo>/../shared/reference)

The annotation file holds the real 200-leaf ActivityNet taxonomy and a few short
real videos (their annotations, and their `length.json` entries), chosen so that:

* train: 5 segments in 4 videos (one video with 2 segments); `i2dFL7sGf9c` is in
  the annotations but not in the HDF5 file (skipped, 1 segment);
* validation: 3 segments of one class; the longest query has no reference window
  long enough, so 2 pairs;
* test: 3 segments of one class, 3 pairs;
* `8Ny9NjNpQQA` has overlapping segments of different classes (dropped).

Features are random (seed 0), float32, D = 500, `2 * n_feat` rows (one video
`2 * n_feat - 1`, which also gives `n_feat` rows after keeping every other one).
"""

import json
import pathlib
import sys

import h5py
import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
TRAIN = ["UyORfPxpaGo", "sOUNe30PXY4", "pSWcVR96xlc", "gU81ZXdYh7o"]
VALIDATION = ["AWryNQMbcd8", "CI6cPLeVCTk", "RZr2KLNE6qE"]
TEST = ["gCx-ucvPhDY", "kBUDMFgWO9I", "qxQWNu_MN94"]
NOT_IN_HDF5 = ["i2dFL7sGf9c"]
DROPPED = ["8Ny9NjNpQQA"]
ODD_ROWS = "CI6cPLeVCTk"
DIM = 500


def main(reference_dir: pathlib.Path) -> None:
    annotations = json.loads(
        (reference_dir / "activitynet" / "activity_net.v1-3.reconstructed.json").read_text()
    )
    lengths = json.loads((reference_dir / "video_reloc_release" / "length.json").read_text())
    videos = TRAIN + VALIDATION + TEST + NOT_IN_HDF5 + DROPPED
    dummy = {
        "version": "VERSION 1.3 (dummy subset)",
        "taxonomy": annotations["taxonomy"],
        "database": {v: annotations["database"][v] for v in videos},
    }
    (HERE / "activity_net.v1-3.min.json").write_text(json.dumps(dummy))
    (HERE / "length.json").write_text(json.dumps({v: lengths[v] for v in videos}))
    rng = np.random.RandomState(0)
    with h5py.File(HERE / "sub_activitynet_v1-3.c3d.hdf5", "w") as f:
        for v in TRAIN + VALIDATION + TEST:
            rows = 2 * lengths[v]["n_feat"] - (v == ODD_ROWS)
            feats = rng.standard_normal((rows, DIM)).astype(np.float32)
            f.create_dataset(f"v_{v}/c3d_features", data=feats)


if __name__ == "__main__":
    default = HERE.parents[3] / "shared" / "reference"
    main(pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else default)
