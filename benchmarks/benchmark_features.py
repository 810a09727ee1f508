"""Prints the speed of `video-reloc-features` on this machine.

    python benchmarks/benchmark_features.py [--seconds 60] [--backbone MobileNetV3Large]

Writes a test video (moving shapes, 640 x 360, 30 frames a second, H.264, `--seconds` long),
then measures, at the default 16 frames sampled a second and clips of 16:

- decoding alone (PyAV, frames resized to the backbone's 224 x 224);
- the backbone alone on batches of 32 frames (median of 10 calls);
- the whole extraction (`extract_features`: decoding in a thread beside the embedding, clip
  averages, the HDF5 write), in sampled frames a second and seconds of video a second.

The backbone is a Keras application built with random weights (the same computation as with
ImageNet's, and no download), saved as a `.keras` file and loaded as a user's would be.
"""

from __future__ import annotations

import video_reloc_bin.startup  # noqa: F401 - first: TensorFlow reads its settings at start

# isort: split
import argparse
import pathlib
import sys
import tempfile
import time

import keras
import numpy as np

from video_reloc import features

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
import video_data  # noqa: E402  (the tests' moving shapes)


def write_test_video(path: pathlib.Path, seconds: float, fps: int = 30) -> pathlib.Path:
    """A `seconds`-long 640 x 360 H.264 video of moving shapes."""
    import av

    small = video_data.frames(seconds * fps / video_data.FPS, [(2, 8, 0), (20, 30, 2)])
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
        for image in small:
            frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(640, 360)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--backbone", default=features.DEFAULT_BACKBONE)
    parser.add_argument("--batch_size", type=int, default=32)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        video = write_test_video(tmp / "video.mp4", args.seconds)
        application = getattr(keras.applications, args.backbone)
        size = features.DEFAULT_FRAME_SIZE
        model = application(
            include_top=False, weights=None, pooling="avg", input_shape=(size, size, 3)
        )
        model.save(tmp / "backbone.keras")
        backbone = features.load_backbone(tmp / "backbone.keras")

        started = time.perf_counter()
        frames = sum(1 for _ in features.sample_frames(video, features.FRAME_RATE, (size, size)))
        decode = time.perf_counter() - started

        batch = np.random.default_rng(0).integers(0, 255, (args.batch_size, size, size, 3))
        backbone(batch)  # traced once
        calls = []
        for _ in range(10):
            started = time.perf_counter()
            backbone(batch)
            calls.append(time.perf_counter() - started)
        embed = float(np.median(calls)) / args.batch_size

        started = time.perf_counter()
        report = features.extract_features(
            video, tmp / "out", backbone=backbone, batch_size=args.batch_size, progress=False
        )
        whole = time.perf_counter() - started

    print(f"{args.backbone} (D = {backbone.feature_dim}), {args.seconds:g} s of 640x360 video:")
    print("| stage | frames/s | seconds of video per second |")
    print("|---|---|---|")
    rate = features.FRAME_RATE
    print(f"| decode + resize | {frames / decode:.0f} | {frames / decode / rate:.1f} |")
    print(f"| backbone, batches of {args.batch_size} | {1 / embed:.0f} | {1 / embed / rate:.1f} |")
    print(
        f"| extract_features | {report.frames / whole:.0f} | {report.frames / whole / rate:.1f} |"
    )


if __name__ == "__main__":
    main()
