"""SavedModel export with the serving signature (TensorFlow Serving layout BASE/<version>/).

The exported model stands alone: `tf.saved_model.load`, `saved_model_cli run` and TensorFlow
Serving run it without this package. Its `serving_default` signature takes

- `query` `(B, Tq, D)` float32, `query_length` `(B,)` int32,
- `reference` `(B, Tr, D)` float32, `reference_length` `(B,)` int32,

and returns

- `start`, `end` `(B,)` int32: the most probable segment of Eq. (12), in feature indices of
  the reference, end exclusive;
- `score` `(B,)` float32: its log-score (log of Eq. 12);
- `probabilities` `(B, Tr, 4)` float32: per-step probabilities of (start, end, inside, outside);
- `attention` `(B, Tr, Tq)` float32: the forward matching's attention over the query.

With `jit_compile=True` (the default) the model runs as a few XLA computations, about six
times faster on a CPU than op by op: the encoder (query and reference), each matching direction,
the localizer, and the decoding (`VideoRelocModel(..., compile_stages=True)`). The signature's
own graph is not compiled, so TensorFlow runs the independent computations at once, the two
matching directions on two cores. XLA compiles once per input shape, so the signature first pads
the batch to a power of two (multiples of 64 past 64), the query to a multiple of
`query_bucket` and the reference to a multiple of `reference_bucket`, and slices the outputs
back: the model never lets padding change a valid step, so the answers are those of the
unpadded inputs, and a server meets a handful of shapes instead of one per request.

Each export writes into a fresh temporary folder and renames it to its version folder when
complete, which takes the version number atomically (see `export_saved_model`).

The export also writes TensorFlow Serving's warm-up file, `assets.extra/tf_serving_warmup_requests`
(see `video_reloc.warmup`): one request per bucket a single pair up to `WARMUP_MAX_QUERY_STEPS`
query and `WARMUP_MAX_REFERENCE_STEPS` reference steps falls into (4 x 6 = 24 with the default
buckets; one request without XLA), so TensorFlow Serving and `video-reloc-serve` compile them
when they load the model, before they report it AVAILABLE, not on the first requests.

A model trained on features of `video-reloc-features` carries how they were made
(`video_reloc.features.FeatureSpec`) in `assets.extra/video_reloc_features.json`
(`read_feature_spec`), so `relocalize` makes video files' features the same way and refuses
features made another way. TensorFlow Serving ignores the file.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import logging
import os
import pathlib
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import tensorflow as tf

from video_reloc import warmup
from video_reloc.architectures import model_feature_dim
from video_reloc.checkpoints import (
    EXPORT_DIR,
    find_model_dir,
    load_checkpoint_model,
    recorded_feature_spec,
    versions,
)
from video_reloc.decode import MAX_SEGMENT_LENGTH, decode_segments
from video_reloc.model import VideoRelocModel
from video_reloc.signature import SIGNATURE_NAME, input_signature
from video_reloc.warmup import WarmupShape

INPUT_NAMES = ("query", "query_length", "reference", "reference_length")
OUTPUT_NAMES = ("start", "end", "score", "probabilities", "attention")
QUERY_BUCKET = 16
REFERENCE_BUCKET = 50
BATCH_BUCKET = 64  # batches pad to 1, 2, 4, ..., 64, then to multiples of 64
WARMUP_MAX_QUERY_STEPS = MAX_SEGMENT_LENGTH  # the longest segment decoded: queries are segments
WARMUP_MAX_REFERENCE_STEPS = 300  # the training references' longest (`relocalize.WINDOW`)
FEATURE_SPEC_FILE = "assets.extra/video_reloc_features.json"  # in a SavedModel folder

logger = logging.getLogger(__name__)


def _round_up(size: tf.Tensor, multiple: int) -> tf.Tensor:
    """The smallest multiple of `multiple` that is at least `size` (and at least `multiple`)."""
    return tf.maximum((size + multiple - 1) // multiple, 1) * multiple


def _batch_bucket(size: tf.Tensor) -> tf.Tensor:
    """Powers of two up to `BATCH_BUCKET`, then multiples of it."""
    powers = tf.constant([2**i for i in range(BATCH_BUCKET.bit_length())], tf.int32)
    index = tf.searchsorted(powers, tf.reshape(size, [1]), side="left")[0]
    power = tf.gather(powers, tf.minimum(index, len(powers) - 1))
    return tf.where(size <= BATCH_BUCKET, power, _round_up(size, BATCH_BUCKET))


def _pad_to(tensor: tf.Tensor, axis: int, size: tf.Tensor) -> tf.Tensor:
    """Zero-pads `tensor` at the end of `axis` up to `size`."""
    rank = len(tensor.shape)
    paddings = [[0, 0]] * rank
    paddings[axis] = [0, size - tf.shape(tensor)[axis]]
    return tf.pad(tensor, paddings)


class RelocalizationModule(tf.Module):
    """A `tf.Module` whose `serve` function is the `serving_default` signature.

    Inputs: `query` `(B, Tq, D)` float32, `query_length` `(B,)` int32, `reference` `(B, Tr, D)`
    float32, `reference_length` `(B,)` int32. Lengths are clipped to the arrays' steps.
    Outputs: `start`, `end` `(B,)` int32 (feature indices, end exclusive), `score` `(B,)`
    float32 (log of Eq. 12), `probabilities` `(B, Tr, 4)` float32 and `attention`
    `(B, Tr, Tq)` float32 (forward matching).

    Args:
        model: A built `VideoRelocModel`.
        feature_dim: D.
        max_segment_length: The longest segment decoded, in features.
        jit_compile: Whether to compile the model's stages and the decoding with XLA, on
            inputs padded to bucketed shapes.
        query_bucket: With XLA, the query is padded to a multiple of this.
        reference_bucket: With XLA, the reference is padded to a multiple of this.
    """

    def __init__(
        self,
        model: VideoRelocModel,
        feature_dim: int,
        max_segment_length: int = MAX_SEGMENT_LENGTH,
        jit_compile: bool = True,
        query_bucket: int = QUERY_BUCKET,
        reference_bucket: int = REFERENCE_BUCKET,
    ):
        super().__init__()
        self.model = model
        # The raw tf.Variables, tracked as such: session-based loaders (`saved_model_cli run`,
        # TensorFlow Serving) restore only variables the object graph holds as tf.Variable.
        self.model_variables = [variable.value for variable in model.variables]
        self.max_segment_length = max_segment_length
        self.jit_compile = jit_compile
        self.query_bucket = query_bucket
        self.reference_bucket = reference_bucket
        # With XLA, the model compiles its stages itself (`compile_stages`), so that the two
        # matching directions run at once; the decoding is one more XLA computation.
        self.relocalize = tf.function(self._relocalize)
        self.decode = tf.function(self._decode, jit_compile=jit_compile, autograph=False)
        self.serve = tf.function(
            self._serve,
            input_signature=list(input_signature(feature_dim).values()),
        )

    def _relocalize(self, query, query_length, reference, reference_length):
        outputs = self.model(
            {
                "query": query,
                "query_length": query_length,
                "reference": reference,
                "reference_length": reference_length,
            },
            training=False,
            return_attention=True,
            compile_stages=self.jit_compile,
        )
        start, end, score, probabilities = self.decode(
            outputs["log_probabilities"], reference_length
        )
        return start, end, score, probabilities, outputs["attention"]

    def _decode(self, log_probabilities, reference_length):
        start, end, score = decode_segments(
            log_probabilities, reference_length, self.max_segment_length
        )
        return start, end, score, tf.exp(log_probabilities)

    def _serve(self, query, query_length, reference, reference_length):
        batch = tf.shape(query)[0]
        query_steps = tf.shape(query)[1]
        reference_steps = tf.shape(reference)[1]
        query_length = tf.clip_by_value(query_length, 0, query_steps)
        reference_length = tf.clip_by_value(reference_length, 0, reference_steps)
        if self.jit_compile:
            padded_batch = _batch_bucket(batch)
            query = _pad_to(query, 1, _round_up(query_steps, self.query_bucket))
            reference = _pad_to(reference, 1, _round_up(reference_steps, self.reference_bucket))
            query, reference = _pad_to(query, 0, padded_batch), _pad_to(reference, 0, padded_batch)
            # Padding rows hold one zero step each: they are computed and thrown away.
            query_length = _pad_to(query_length, 0, padded_batch) + tf.cast(
                tf.range(padded_batch) >= batch, tf.int32
            )
            reference_length = _pad_to(reference_length, 0, padded_batch) + tf.cast(
                tf.range(padded_batch) >= batch, tf.int32
            )
        start, end, score, probabilities, attention = self.relocalize(
            query, query_length, reference, reference_length
        )
        return {
            "start": start[:batch],
            "end": end[:batch],
            "score": score[:batch],
            "probabilities": probabilities[:batch, :reference_steps],
            "attention": attention[:batch, :reference_steps, :query_steps],
        }


def _bucket_edges(limit: int, multiple: int) -> list[int]:
    """The padded sizes of 1 ... `limit` steps: multiples of `multiple` up to `limit`'s bucket."""
    return list(range(multiple, int(_round_up(limit, multiple)) + 1, multiple))


def batch_bucket(size: int) -> int:
    """The padded batch of `size` rows: the signature's own rule (`_batch_bucket`), evaluated."""
    return int(_batch_bucket(tf.constant(size, tf.int32)))


def bucket_warmup_shapes(
    max_query_steps: int = WARMUP_MAX_QUERY_STEPS,
    max_reference_steps: int = WARMUP_MAX_REFERENCE_STEPS,
    batch_sizes: Iterable[int] = (1,),
    query_bucket: int = QUERY_BUCKET,
    reference_bucket: int = REFERENCE_BUCKET,
) -> list[WarmupShape]:
    """One shape per padded bucket that inputs up to the given sizes fall into.

    With the defaults, batch 1 and every query bucket up to 64 steps (16, 32, 48, 64) times
    every reference bucket up to 300 (50, 100, ..., 300): 24 shapes, each compiled once by XLA.
    """
    return [
        WarmupShape(batch, query, reference)
        for batch in sorted({batch_bucket(b) for b in batch_sizes})
        for query in _bucket_edges(max_query_steps, query_bucket)
        for reference in _bucket_edges(max_reference_steps, reference_bucket)
    ]


def default_warmup_shapes(jit_compile: bool = True) -> list[WarmupShape]:
    """The warm-up of an export: every default bucket with XLA, else one small request."""
    if jit_compile:
        return bucket_warmup_shapes()
    return [WarmupShape(1, QUERY_BUCKET, REFERENCE_BUCKET)]


def next_version(export_base: str | pathlib.Path) -> int:
    """One more than the highest numeric version folder under `export_base` (1 if none)."""
    return max(versions(export_base, saved_models_only=False), default=0) + 1


def _lock(path: pathlib.Path) -> int | None:
    """An open descriptor of folder `path` holding its exclusive lock, or `None` if another
    holds it (a live export). The kernel drops the lock when its process dies."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return None
    return descriptor


def _is_temporary(path: pathlib.Path) -> bool:
    """An export's temporary folder: `.export-*.tmp`, or `.N.tmp` of earlier releases."""
    return path.name.startswith(".") and path.name.endswith(".tmp") and path.is_dir()


def remove_stale_exports(export_base: str | pathlib.Path) -> list[pathlib.Path]:
    """Removes the temporary folders that exports killed midway left under `export_base`.

    A running export holds a lock on its folder (`flock`), which the kernel drops when its
    process dies; a folder whose lock can be taken is a leftover, and goes.

    Returns:
        The folders removed.
    """
    base = pathlib.Path(export_base)
    removed = []
    for path in sorted(base.iterdir()) if base.is_dir() else []:
        if not _is_temporary(path):
            continue
        try:
            descriptor = _lock(path)
        except FileNotFoundError:
            continue  # removed meanwhile, or published
        if descriptor is None:
            continue  # an export in progress
        try:
            try:
                if os.stat(path).st_ino != os.fstat(descriptor).st_ino:
                    continue  # published meanwhile: the lock was its, the path is gone
            except FileNotFoundError:
                continue
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
            logger.warning("Removed %s, left by an export that did not finish", path)
        finally:
            os.close(descriptor)
    return removed


def _fresh_folder(base: pathlib.Path) -> tuple[pathlib.Path, int]:
    """A new temporary folder under `base`, locked: its path and lock descriptor."""
    while True:
        path = pathlib.Path(tempfile.mkdtemp(prefix=".export-", suffix=".tmp", dir=base))
        try:
            descriptor = _lock(path)
        except FileNotFoundError:
            continue  # taken for a leftover (not locked yet) by another clean-up, and removed
        if descriptor is None:
            continue  # another export's clean-up took it first, and removes it
        try:
            same = os.stat(path).st_ino == os.fstat(descriptor).st_ino
        except FileNotFoundError:
            same = False  # that clean-up removed it before this export locked it
        if same:
            return path, descriptor
        os.close(descriptor)


def _publish(folder: pathlib.Path, base: pathlib.Path, version: int | None) -> pathlib.Path:
    """Renames a complete export to its version folder; the rename takes the number.

    Renaming onto a version folder that exists (it holds files) fails, so two exports that
    pick the same next number cannot both have it: the second takes the number after.
    """
    while True:
        target = base / str(next_version(base) if version is None else version)
        try:
            os.rename(folder, target)
            return target
        except OSError as error:
            if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            if version is not None:
                raise FileExistsError(
                    f"SavedModel version folder {target} already exists."
                ) from None


def export_saved_model(
    model: VideoRelocModel,
    export_base: str | pathlib.Path,
    version: int | None = None,
    feature_dim: int | None = None,
    jit_compile: bool = True,
    max_segment_length: int = MAX_SEGMENT_LENGTH,
    warmup_shapes: Sequence[WarmupShape] | None = None,
    feature_spec: Mapping[str, Any] | None = None,
) -> pathlib.Path:
    """Writes `model` as a SavedModel under `export_base/<version>/`.

    The export writes into a fresh temporary folder of its own (`.export-XXXX.tmp`, which a
    server polling the base path ignores) and renames it to its version folder when complete;
    the rename takes the version number, so exports into one base at the same time get
    distinct versions. The leftovers of exports killed midway are removed first.

    Args:
        model: A built model.
        export_base: The model's base path (TensorFlow Serving's `--model_base_path`).
        version: The version folder; `None` takes the next free number.
        feature_dim: D; `None` reads it from the model (`architectures.model_feature_dim`).
        jit_compile: Whether the signature runs the model with XLA (see the module docstring).
        max_segment_length: The longest segment decoded, in features.
        warmup_shapes: The requests of `assets.extra/tf_serving_warmup_requests` (zero features,
            every step valid); `None`: `default_warmup_shapes(jit_compile)`; empty: no file.
        feature_spec: How the features were made (`FeatureSpec.to_json()`), written to
            `FEATURE_SPEC_FILE`; `None`: unknown, no file.

    Returns:
        The version folder written.

    Raises:
        FileExistsError: If the version asked for exists.
    """
    if feature_dim is None:
        feature_dim = model_feature_dim(model)
    base = pathlib.Path(export_base)
    if version is not None:
        version = int(version)
        if (base / str(version)).exists():
            raise FileExistsError(
                f"SavedModel version folder {base / str(version)} already exists."
            )
    base.mkdir(parents=True, exist_ok=True)
    remove_stale_exports(base)
    module = RelocalizationModule(
        model, feature_dim, max_segment_length=max_segment_length, jit_compile=jit_compile
    )
    folder, lock = _fresh_folder(base)
    try:
        tf.saved_model.save(module, str(folder), signatures={SIGNATURE_NAME: module.serve})
        if warmup_shapes is None:
            warmup_shapes = default_warmup_shapes(jit_compile)
        if warmup_shapes:
            warmup.write_warmup_requests(
                folder,
                [
                    warmup.make_request(shape, feature_dim, SIGNATURE_NAME)
                    for shape in warmup_shapes
                ],
            )
        if feature_spec is not None:
            (folder / FEATURE_SPEC_FILE).parent.mkdir(exist_ok=True)
            (folder / FEATURE_SPEC_FILE).write_text(json.dumps(dict(feature_spec), indent=1) + "\n")
        return _publish(folder, base, version)  # a half-written export never looks like a version
    finally:
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
        os.close(lock)


def read_feature_spec(saved_model: str | pathlib.Path) -> dict[str, Any] | None:
    """How the features of a SavedModel folder's model were made, or `None` if unknown."""
    path = pathlib.Path(saved_model) / FEATURE_SPEC_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


@dataclasses.dataclass
class ExportConfig:
    """What `export_checkpoint` exports, and where.

    Attributes:
        checkpoint: A checkpoint prefix, or a folder of checkpoints (a model dir: its latest
            good checkpoint; `MODEL_DIR/best`: the best model).
        export_dir: The SavedModel base; `None`: `MODEL_DIR/export`.
        version: The version folder; `None`: the next free number.
    """

    checkpoint: str
    export_dir: str | None = None
    version: int | None = None


def export_checkpoint(config: ExportConfig) -> pathlib.Path:
    """Exports a training checkpoint as a SavedModel (`serving_default` signature).

    Args:
        config: What and where (`ExportConfig`).

    Returns:
        The SavedModel folder written (`EXPORT_DIR/<version>/`).
    """
    model, prefix = load_checkpoint_model(config.checkpoint)
    model_dir = find_model_dir(pathlib.Path(prefix).parent)
    export_dir = config.export_dir
    if export_dir is None:
        export_dir = model_dir / EXPORT_DIR
    spec = recorded_feature_spec(model_dir) if model_dir is not None else None
    path = export_saved_model(model, export_dir, config.version, feature_spec=spec)
    print(f"Exported {prefix} to {path}", flush=True)
    return path
