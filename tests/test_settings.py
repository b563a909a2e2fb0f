"""hmf.settings: config sections filled by the schema, then typed and frozen."""

import dataclasses
from collections.abc import Mapping

import pytest

from hmf.config import ConfigError
from hmf.settings import as_dict, build, section


@dataclasses.dataclass(frozen=True)
class _Inner:
    a: int
    b: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class _Outer:
    name: str
    inner: _Inner
    table: Mapping[str, _Inner]
    maybe: _Inner | None


def test_section_fills_the_schema_defaults_without_changing_the_input():
    given = {"precision": "bf16"}
    filled = section("features", given)
    assert filled["precision"] == "bf16" and filled["batch_size"] == "auto" and filled["slides_per_job"] == 1
    assert given == {"precision": "bf16"}


def test_section_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"config key features\.precision: 'x' is not one of"):
        section("features", {"precision": "x"})
    with pytest.raises(ConfigError, match=r"config key features\.nope: unknown key"):
        section("features", {"nope": 1})
    with pytest.raises(KeyError, match="no config section"):
        section("nonsense")


def test_build_types_nested_sections_and_freezes_them():
    values = {"name": "x", "inner": {"a": 1, "b": ["p", "q"]}, "table": {"k": {"a": 2, "b": []}}, "maybe": None}
    built = build(_Outer, values)
    assert built.inner == _Inner(1, ("p", "q")) and built.table["k"] == _Inner(2, ()) and built.maybe is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.name = "y"
    with pytest.raises(TypeError):
        built.table["k"] = None
    assert as_dict(built) == {**values, "inner": {"a": 1, "b": ["p", "q"]}, "table": {"k": {"a": 2, "b": []}}}


def test_build_refuses_unknown_and_missing_keys():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['extra'\]"):
        build(_Inner, {"a": 1, "b": [], "extra": 0})
    with pytest.raises(ConfigError, match=r"missing key\(s\) \['b'\]"):
        build(_Inner, {"a": 1})
