"""Small videos made in the tests: moving shapes on a textured background, written with PyAV.

Each class is a shape of its own colour moving its own way (a red disc moving right, a blue
square moving left, ...). A video shows background only, except during its segments, when
the shape of the segment's class crosses the frame. A tiny Keras backbone maps frames to
embeddings (colour layout on a 4 x 4 grid, then a seeded Dense layer), enough for a model to
tell the classes apart.
"""

from __future__ import annotations

import pathlib

import numpy as np

HEIGHT, WIDTH = 48, 64
FPS = 16
SHAPES = (
    ("Red disc", (220, 40, 40), "disc", (1, 0)),
    ("Blue square", (40, 60, 220), "square", (-1, 0)),
    ("Green bar", (40, 200, 60), "bar", (0, 1)),
    ("Yellow disc", (230, 210, 40), "disc", (0, -1)),
    ("Purple square", (160, 50, 190), "square", (1, 1)),
)
"""(class name, RGB colour, shape, direction of motion) of every class."""
CLASSES = tuple(name for name, *_ in SHAPES)


def _background(rng: np.random.Generator, frames: int) -> np.ndarray:
    base = rng.integers(70, 130, (HEIGHT // 8, WIDTH // 8, 3)).astype(np.float32)
    base = np.kron(base, np.ones((8, 8, 1), np.float32))
    drift = np.linspace(-15, 15, frames, dtype=np.float32)[:, None, None, None]
    return np.clip(base[None] + drift, 0, 255)


def _draw(frame: np.ndarray, shape: str, colour, cy: float, cx: float, size: int = 9) -> None:
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]
    if shape == "disc":
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= size**2
    elif shape == "square":
        mask = (abs(yy - cy) <= size) & (abs(xx - cx) <= size)
    else:
        mask = (abs(yy - cy) <= size // 3) & (abs(xx - cx) <= 2 * size)
    frame[mask] = colour


def frames(seconds: float, segments, seed: int = 0) -> np.ndarray:
    """`(T, H, W, 3)` uint8 frames at `FPS`; `segments` are `(start_s, end_s, class index)`."""
    rng = np.random.default_rng(seed)
    count = int(round(seconds * FPS))
    video = _background(rng, count)
    for start, end, c in segments:
        _, colour, shape, (dx, dy) = SHAPES[c]
        first, last = int(round(start * FPS)), int(round(end * FPS))
        for t in range(first, min(last, count)):
            phase = (t - first) / max(last - first - 1, 1)  # 0 ... 1 across the segment
            cx = WIDTH / 2 + dx * (phase - 0.5) * (WIDTH - 20)
            cy = HEIGHT / 2 + dy * (phase - 0.5) * (HEIGHT - 20)
            _draw(video[t], shape, colour, cy, cx)
    return video.astype(np.uint8)


def write_video(path: pathlib.Path, video: np.ndarray, fps: int = FPS) -> pathlib.Path:
    """Writes `(T, H, W, 3)` uint8 frames as an MPEG-4 file."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height = video.shape[2], video.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"qscale": "3"}
        for image in video:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def tiny_backbone(path: pathlib.Path, size: int = 32, dim: int = 24, seed: int = 0):
    """Saves a `.keras` frame embedder: RGB (N, size, size, 3), 0-255, to (N, dim)."""
    import keras

    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    x = keras.layers.AveragePooling2D(size // 4)(x)  # colour on a 4 x 4 grid
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(dim, kernel_initializer=keras.initializers.GlorotUniform(seed))(x)
    model = keras.Model(inputs, outputs, name="tiny_backbone")
    model.save(path)
    return path
