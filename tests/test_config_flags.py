"""Flags made from a config dataclass (`video_reloc.cli.config_flags`): one source of config."""

import dataclasses
from typing import ClassVar

import pytest
from absl import flags

from video_reloc import training
from video_reloc.cli import config_flags
from video_reloc.errors import UserError


@dataclasses.dataclass
class ToyConfig:
    """A toy run.

    Attributes:
        name: Where it goes.
        steps: Steps in all, a help
            text of two lines.
        rate: A rate.
        mode: `a` or `b`.
        note: Optional words.
        quick: Whether to hurry.
    """

    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"mode": ("a", "b")}

    name: str
    steps: int = 10
    rate: float = 0.5
    mode: str = "a"
    note: str | None = None
    quick: bool = False


def test_every_field_is_a_typed_flag_with_its_help_and_presets():
    values = flags.FlagValues()
    presets = {"small": ToyConfig("x", steps=3), "big": ToyConfig("x")}
    names = config_flags.define_flags(ToyConfig, presets, flag_values=values)
    assert names == ["name", "steps", "rate", "mode", "note", "quick"]
    assert values["steps"].help == (
        "Steps in all, a help text of two lines. Default: 3 (preset small), 10 (preset big)."
    )
    assert values["rate"].help == "A rate. Default: 0.5."
    assert values["quick"].help == "Whether to hurry. Default: false."
    assert values["mode"].parser.enum_values == ["a", "b"]
    values(["prog", "--name=run", "--steps=7", "--mode=b", "--quick"])
    assert config_flags.overrides(names, values) == {
        "name": "run",
        "steps": 7,
        "mode": "b",
        "quick": True,
    }
    assert values["rate"].value is None


def test_a_field_without_a_default_is_required():
    values = flags.FlagValues()
    config_flags.define_flags(ToyConfig, {"only": ToyConfig("x")}, flag_values=values)
    with pytest.raises(flags.IllegalFlagValueError, match="--name"):
        values(["prog", "--steps=2"])
        values.validate_all_flags()


def test_a_field_without_help_is_refused():
    @dataclasses.dataclass
    class Undocumented:
        """No attributes section."""

        size: int = 1

    with pytest.raises(TypeError, match="size .* has no help"):
        config_flags.define_flags(Undocumented, {}, flag_values=flags.FlagValues())


def test_every_train_config_field_is_a_flag_of_the_train_binary():
    """Adding a field to TrainConfig is all it takes to add a `video-reloc-train` flag."""
    values = flags.FlagValues()
    presets = {name: training.preset_config(name, model_dir="") for name in training.PRESETS}
    names = config_flags.define_flags(training.TrainConfig, presets, flag_values=values)
    assert names == [field.name for field in dataclasses.fields(training.TrainConfig)]
    for name in names:
        assert len(values[name].help) > 20, name
    assert values["strategy"].parser.enum_values == list(training.STRATEGIES)
    assert "(preset synthetic)" in values["train_steps"].help


def test_overrides_are_parsed_as_their_fields_types():
    parsed = config_flags.parse_overrides(
        ToyConfig, ["steps=4", "rate=0.25", "mode=b", "note=none", "quick=true"], "params"
    )
    assert parsed == {"steps": 4, "rate": 0.25, "mode": "b", "note": None, "quick": True}
    assert config_flags.parse_overrides(ToyConfig, ["note=hi", "quick=0"], "params") == {
        "note": "hi",
        "quick": False,
    }
    for item, message in [
        ("steps", "'steps' is not KEY=VALUE of"),
        ("speed=3", "'speed=3' is not KEY=VALUE of"),
        ("steps=many", "steps='many' is not a int"),
        ("steps=none", "steps='none' is not a int"),
        ("quick=maybe", "quick='maybe' is not a bool"),
        ("mode=c", r"mode must be one of \['a', 'b'\], got 'c'"),
    ]:
        with pytest.raises(UserError, match=message) as error:
            config_flags.parse_overrides(ToyConfig, [item], "params")
        assert error.value.field == "params"
