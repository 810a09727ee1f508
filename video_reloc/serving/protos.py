"""TensorFlow Serving's configuration protos that `tensorflow-serving-api` does not ship.

`tensorflow-serving-api` 2.21 has `model_server_config_pb2` (`--model_config_file`) but neither
`session_bundle_config_pb2` (`BatchingParameters`, `--batching_parameters_file`) nor
`monitoring_config_pb2` (`MonitoringConfig`, `--monitoring_config_file`). Each is imported from
the package when a release has it; otherwise it is declared here with TensorFlow Serving's
message names, field names, numbers and types (from `session_bundle_config.proto` and
`monitoring_config.proto`), in a descriptor pool of its own, so that
`google.protobuf.text_format` reads the same files TensorFlow Serving reads, with the same
errors for unknown fields and wrong types.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

_Field = descriptor_pb2.FieldDescriptorProto


def _declare() -> tuple[type, type]:
    """`BatchingParameters` and `MonitoringConfig`, declared as TensorFlow Serving does."""
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    batching = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/servables/tensorflow/session_bundle_config.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=[wrappers_pb2.DESCRIPTOR.name],
    )
    message = batching.message_type.add(name="BatchingParameters")
    for name, number, wrapper in [
        ("max_batch_size", 1, "Int64Value"),
        ("batch_timeout_micros", 2, "Int64Value"),
        ("max_enqueued_batches", 3, "Int64Value"),
        ("num_batch_threads", 4, "Int64Value"),
        ("thread_pool_name", 5, "StringValue"),
        ("enable_large_batch_splitting", 8, "BoolValue"),
        ("max_execution_batch_size", 9, "Int64Value"),
    ]:
        message.field.add(
            name=name,
            number=number,
            label=_Field.LABEL_OPTIONAL,
            type=_Field.TYPE_MESSAGE,
            type_name=f".google.protobuf.{wrapper}",
        )
    message.field.add(
        name="allowed_batch_sizes", number=6, label=_Field.LABEL_REPEATED, type=_Field.TYPE_INT64
    )
    message.field.add(
        name="pad_variable_length_inputs",
        number=7,
        label=_Field.LABEL_OPTIONAL,
        type=_Field.TYPE_BOOL,
    )
    pool.AddSerializedFile(batching.SerializeToString())

    monitoring = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/config/monitoring_config.proto",
        package="tensorflow.serving",
        syntax="proto3",
    )
    prometheus = monitoring.message_type.add(name="PrometheusConfig")
    prometheus.field.add(
        name="enable", number=1, label=_Field.LABEL_OPTIONAL, type=_Field.TYPE_BOOL
    )
    prometheus.field.add(
        name="path", number=2, label=_Field.LABEL_OPTIONAL, type=_Field.TYPE_STRING
    )
    config = monitoring.message_type.add(name="MonitoringConfig")
    config.field.add(
        name="prometheus_config",
        number=1,
        label=_Field.LABEL_OPTIONAL,
        type=_Field.TYPE_MESSAGE,
        type_name=".tensorflow.serving.PrometheusConfig",
    )
    pool.AddSerializedFile(monitoring.SerializeToString())
    return tuple(
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.serving.{name}"))
        for name in ("BatchingParameters", "MonitoringConfig")
    )


_declared: tuple[type, type] | None = None


def _declared_classes() -> tuple[type, type]:
    global _declared
    if _declared is None:
        _declared = _declare()
    return _declared


def batching_parameters_class() -> type:
    """TensorFlow Serving's `tensorflow.serving.BatchingParameters` message class."""
    try:
        from tensorflow_serving.servables.tensorflow import session_bundle_config_pb2
    except ImportError:
        return _declared_classes()[0]
    return session_bundle_config_pb2.BatchingParameters


def monitoring_config_class() -> type:
    """TensorFlow Serving's `tensorflow.serving.MonitoringConfig` message class."""
    try:
        from tensorflow_serving.config import monitoring_config_pb2
    except ImportError:
        return _declared_classes()[1]
    return monitoring_config_pb2.MonitoringConfig
