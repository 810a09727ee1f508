"""TensorFlow Serving's text protobuf configuration files, read without a schema.

`--model_config_file` (`parse_model_config`, `ModelConfig`) and `--batching_parameters_file`
(`parse_batching_parameters`, `BatchingParameters`), over a small text-format parser
(`parse_text_proto`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any


class ConfigError(ValueError):
    """A configuration file that does not parse or holds unknown fields."""


_TOKEN = re.compile(
    r"""(?P<space>\s+|\#[^\n]*)
      | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
      | (?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
      | (?P<name>[A-Za-z_][\w.]*)
      | (?P<punct>[{}<>:\[\],;])""",
    re.VERBOSE,
)


def _tokenize(text: str, source: str) -> list[tuple[str, str, int]]:
    tokens, position, line = [], 0, 1
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise ConfigError(f"{source} line {line}: unexpected character {text[position]!r}")
        kind, value = match.lastgroup, match.group()
        if kind != "space":
            tokens.append((kind, value, line))
        line += value.count("\n")
        position = match.end()
    return tokens


def parse_text_proto(text: str, source: str = "config") -> dict[str, list[Any]]:
    """Parses protobuf text format into nested dicts, without a schema.

    Every field maps to the list of its values (fields may repeat); a message value is such a
    dict, a scalar is a `str` (strings unquoted, adjacent strings joined), `int`, `float` or,
    for an identifier (an enum or a boolean), a `str`.

    Args:
        text: The file's text.
        source: A name for error messages.

    Returns:
        The top-level message.

    Raises:
        ConfigError: On a syntax error, with its line.
    """
    tokens = _tokenize(text, source)
    position = 0

    def error(message: str) -> ConfigError:
        line = tokens[min(position, len(tokens) - 1)][2] if tokens else 1
        return ConfigError(f"{source} line {line}: {message}")

    def peek() -> tuple[str, str, int] | None:
        return tokens[position] if position < len(tokens) else None

    def take(value: str | None = None) -> tuple[str, str, int]:
        nonlocal position
        token = peek()
        if token is None:
            raise error(f"expected {value or 'a value'}, found the end of the file")
        if value is not None and token[1] != value:
            raise error(f"expected {value!r}, found {token[1]!r}")
        position += 1
        return token

    def scalar() -> Any:
        kind, value, _ = take()
        if kind == "string":
            parts = [value]
            while (token := peek()) is not None and token[0] == "string":
                parts.append(take()[1])
            return "".join(
                bytes(p[1:-1], "utf-8").decode("unicode_escape") if "\\" in p else p[1:-1]
                for p in parts
            )
        if kind == "number":
            return float(value) if any(c in value for c in ".eE") else int(value)
        if kind == "name":
            return value
        raise error(f"expected a value, found {value!r}")

    def message(closing: str | None) -> dict[str, list[Any]]:
        fields: dict[str, list[Any]] = {}
        while True:
            token = peek()
            if token is None:
                if closing is not None:
                    raise error(f"expected {closing!r}, found the end of the file")
                return fields
            if token[1] == closing:
                take()
                return fields
            kind, name, _ = take()
            if kind != "name":
                raise error(f"expected a field name, found {name!r}")
            if (token := peek()) is not None and token[1] == ":":
                take()
            token = peek()
            if token is not None and token[1] in ("{", "<"):
                take()
                values = [message("}" if token[1] == "{" else ">")]
            elif token is not None and token[1] == "[":
                take()
                values = []
                while (token := peek()) is not None and token[1] != "]":
                    if token[1] in ("{", "<"):
                        take()
                        values.append(message("}" if token[1] == "{" else ">"))
                    else:
                        values.append(scalar())
                    if (token := peek()) is not None and token[1] == ",":
                        take()
                take("]")
            else:
                values = [scalar()]
            fields.setdefault(name, []).extend(values)
            if (token := peek()) is not None and token[1] in (",", ";"):
                take()

    return message(None)


def _check_fields(message: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    unknown = sorted(set(message) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown}; known: {sorted(allowed)}")


def _single(message: Mapping[str, list[Any]], field: str, where: str, default: Any = None):
    values = message.get(field, [])
    if len(values) > 1:
        raise ConfigError(f"{where}: field {field!r} given {len(values)} times")
    return values[0] if values else default


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """One model to serve, as in TensorFlow Serving's `ModelConfig`.

    Attributes:
        name: The model's name in URLs.
        base_path: The folder holding numeric version folders.
        versions: Versions to serve; empty means the latest `num_latest`.
        num_latest: How many of the highest versions to serve when `versions` is empty;
            0 serves all.
    """

    name: str
    base_path: str
    versions: tuple[int, ...] = ()
    num_latest: int = 1


def parse_model_config(text: str, source: str = "model config") -> list[ModelConfig]:
    """Reads TensorFlow Serving's `--model_config_file` text format.

    For example::

        model_config_list {
          config { name: 'reloc' base_path: '/models/reloc' model_platform: 'tensorflow' }
          config {
            name: 'reloc_ab' base_path: '/models/ab'
            model_version_policy { specific { versions: 1 versions: 2 } }
          }
        }

    `model_version_policy` may be `latest { num_versions: N }`, `all {}` or
    `specific { versions: ... }`.

    Args:
        text: The file's text.
        source: A name for error messages.

    Returns:
        The models, in file order.

    Raises:
        ConfigError: On a syntax error, an unknown field, a missing name or base path, a
            platform other than `tensorflow` or a repeated name.
    """
    root = parse_text_proto(text, source)
    _check_fields(root, ["model_config_list"], source)
    config_list = _single(root, "model_config_list", source, {})
    _check_fields(config_list, ["config"], f"{source}: model_config_list")
    configs, names = [], set()
    for index, config in enumerate(config_list.get("config", [])):
        where = f"{source}: config #{index + 1}"
        if not isinstance(config, dict):
            raise ConfigError(f"{where}: expected a message")
        _check_fields(
            config, ["name", "base_path", "model_platform", "model_version_policy"], where
        )
        name = _single(config, "name", where)
        base_path = _single(config, "base_path", where)
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}: needs a name")
        if not isinstance(base_path, str) or not base_path:
            raise ConfigError(f"{where} ({name}): needs a base_path")
        platform = _single(config, "model_platform", where, "tensorflow")
        if platform != "tensorflow":
            raise ConfigError(f"{where} ({name}): model_platform {platform!r} is not 'tensorflow'")
        if name in names:
            raise ConfigError(f"{where}: model name {name!r} is used twice")
        names.add(name)
        versions, num_latest = (), 1
        policy = _single(config, "model_version_policy", where)
        if policy is not None:
            _check_fields(policy, ["latest", "all", "specific"], f"{where}: model_version_policy")
            if len(policy) != 1:
                raise ConfigError(f"{where}: model_version_policy needs exactly one policy")
            kind, (value,) = next(iter(policy.items()))
            if kind == "latest":
                _check_fields(value, ["num_versions"], f"{where}: latest")
                num_latest = int(_single(value, "num_versions", where, 1))
                if num_latest < 1:
                    raise ConfigError(f"{where}: latest num_versions must be at least 1")
            elif kind == "all":
                num_latest = 0
            else:
                _check_fields(value, ["versions"], f"{where}: specific")
                versions = tuple(int(v) for v in value.get("versions", []))
                if not versions:
                    raise ConfigError(f"{where}: specific policy lists no versions")
        configs.append(ModelConfig(name, base_path, versions, num_latest))
    if not configs:
        raise ConfigError(f"{source}: no model configured")
    return configs


@dataclasses.dataclass(frozen=True)
class BatchingParameters:
    """Request batching, as TensorFlow Serving's `--batching_parameters_file` sets it.

    Attributes:
        max_batch_size: The most rows run together; a larger request runs alone.
        batch_timeout_micros: How long the first request of a batch waits for others; 0 takes
            only what is already queued (no added latency).
        max_enqueued_batches: With `max_batch_size`, bounds the queued rows; past it, requests
            get HTTP 503.
        num_batch_threads: Batches run at the same time per model version.
    """

    max_batch_size: int = 64
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 100
    num_batch_threads: int = 1


def parse_batching_parameters(text: str, source: str = "batching parameters") -> BatchingParameters:
    """Reads TensorFlow Serving's `--batching_parameters_file` text format.

    For example `max_batch_size { value: 32 } batch_timeout_micros { value: 2000 }`. Fields of
    TensorFlow Serving this server has no use for (`pad_variable_length_inputs`,
    `allowed_batch_sizes`, ...) are accepted and ignored: it always pads variable lengths.

    Raises:
        ConfigError: On a syntax error or an unknown field.
    """
    root = parse_text_proto(text, source)
    known = [field.name for field in dataclasses.fields(BatchingParameters)]
    ignored = [
        "allowed_batch_sizes",
        "pad_variable_length_inputs",
        "enable_large_batch_splitting",
        "max_execution_batch_size",
        "thread_pool_name",
    ]
    _check_fields(root, known + ignored, source)
    values = {}
    for field in known:
        wrapper = _single(root, field, source)
        if wrapper is not None:
            value = (
                _single(wrapper, "value", f"{source}: {field}")
                if isinstance(wrapper, dict)
                else wrapper
            )
            if not isinstance(value, int) or value < 0:
                raise ConfigError(f"{source}: {field} must be a non-negative integer")
            values[field] = value
    parameters = BatchingParameters(**values)
    if parameters.max_batch_size < 1 or parameters.num_batch_threads < 1:
        raise ConfigError(f"{source}: max_batch_size and num_batch_threads must be at least 1")
    return parameters
