import pytest

from mrbench.registry import Registry, UnknownEntryError


def test_lazy_string_entries_and_did_you_mean():
    reg: Registry = Registry("thing")
    reg.register("json_dumps", "json:dumps", help="lazy")

    @reg.register("double")
    class Double:
        """Doubles things."""

    assert reg.get("json_dumps")({"a": 1}) == '{"a": 1}'
    assert reg.get("double") is Double
    assert [e.help for e in reg] == ["Doubles things.", "lazy"]
    with pytest.raises(UnknownEntryError, match="did you mean 'double'"):
        reg.get("doubel")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("double", object)
