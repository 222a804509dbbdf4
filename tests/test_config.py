from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import msgspec
import pytest
from msgspec import Meta

from failsoft import config
from failsoft.errors import ConfigError

GOOD = """
[models.churn]
deadline_ms = 50
[[models.churn.inputs]]
name = "tenure"
min = 0
[models.churn.output]
type = "float"
[[models.churn.tiers]]
name = "remote"
kind = "oip"
url = "http://127.0.0.1:1"
model_name = "churn"
[[models.churn.tiers]]
kind = "default"
value = 0.2
"""


def error_of(write_toml: Callable[[str], Path], text: str) -> ConfigError:
    path = write_toml(text)
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert str(path) in str(info.value), "the error names the file"
    return info.value


def test_good_file_parses_with_defaults(write_toml: Callable[[str], Path]) -> None:
    spec = config.load(write_toml(GOOD))
    tier = spec.models["churn"].tiers[0]
    assert isinstance(tier, config.OipTierSpec)
    assert tier.timeout_ms == 100 and tier.max_concurrency == 32 and tier.breaker.window == 20


def test_the_environment_names_the_store_and_the_state_folder(write_toml: Callable[[str], Path]) -> None:
    """A container mounts portfolio.toml read-only and its state on a volume: no edit of the file."""
    env = {"FAILSOFT_DATA_DIR": "/var/lib/failsoft", "FAILSOFT_STORE_URL": "postgresql://db/failsoft",
           "FAILSOFT_DRAIN_S": "7.5"}  # fmt: skip
    spec = config.load(write_toml(GOOD), environ=env)
    assert (spec.data_dir, spec.store_url(), spec.server.drain_s) == (
        "/var/lib/failsoft",
        "postgresql://db/failsoft",
        7.5,
    )
    plain = config.load(write_toml(GOOD), environ={})
    assert (plain.data_dir, plain.server.drain_s) == ("failsoft-data", 0.0)
    with pytest.raises(ConfigError, match=r"FAILSOFT_DRAIN_S.*not a number of seconds: 'soon'"):
        config.load(write_toml(GOOD), environ={"FAILSOFT_DRAIN_S": "soon"})
    with pytest.raises(ConfigError, match="drain_s"):
        config.load(write_toml(GOOD), environ={"FAILSOFT_DRAIN_S": "-1"})


def test_negative_timeout_names_key_and_fix(write_toml: Callable[[str], Path]) -> None:
    err = error_of(write_toml, GOOD.replace('model_name = "churn"', 'model_name = "churn"\ntimeout_ms = -5'))
    assert err.key == "models.churn.tiers[0].timeout_ms"
    assert "-5" in err.problem and err.fix


def test_unknown_key_is_named(write_toml: Callable[[str], Path]) -> None:
    err = error_of(write_toml, GOOD.replace("deadline_ms = 50", "deadline_ms = 50\ndeadlin_ms = 3"))
    assert err.key == "models.churn.deadlin_ms"
    assert "spelling" in err.fix


def test_unknown_tier_kind(write_toml: Callable[[str], Path]) -> None:
    err = error_of(write_toml, GOOD.replace('kind = "oip"', 'kind = "grpc"'))
    assert err.key.startswith("models.churn.tiers[0]")


def test_chain_must_end_with_default(write_toml: Callable[[str], Path]) -> None:
    text = GOOD.split("[[models.churn.tiers]]\nkind")[0]
    err = error_of(write_toml, text)
    assert err.key == "models.churn.tiers[0]" and "default" in err.fix


def test_missing_required_key(write_toml: Callable[[str], Path]) -> None:
    err = error_of(write_toml, GOOD.replace('url = "http://127.0.0.1:1"\n', ""))
    assert err.key == "models.churn.tiers[0].url"


def test_bad_toml_syntax(write_toml: Callable[[str], Path]) -> None:
    err = error_of(write_toml, GOOD + "\n[models.broken\n")
    assert "TOML" in err.problem


def test_default_needs_value_or_source(write_toml: Callable[[str], Path]) -> None:
    err = error_of(write_toml, GOOD.replace("value = 0.2", ""))
    assert err.key == "models.churn.tiers[1]"


def test_untrusted_pickle_refused(write_toml: Callable[[str], Path], tmp_path: Path) -> None:
    text = GOOD.replace(
        '[[models.churn.tiers]]\nkind = "default"',
        '[[models.churn.tiers]]\nname = "cpu"\nkind = "python"\npath = "m/model.joblib"\n'
        '[[models.churn.tiers]]\nkind = "default"',
    )
    err = error_of(write_toml, text)
    assert err.key == "models.churn.tiers[1].path" and "trusted_model_dirs" in err.fix
    config.load(write_toml('trusted_model_dirs = ["m"]\n' + text))  # trusted: accepted


def test_duplicate_tier_and_feature_names(write_toml: Callable[[str], Path]) -> None:
    err = error_of(write_toml, GOOD.replace('kind = "default"', 'kind = "default"\nname = "remote"'))
    assert err.key == "models.churn.tiers[1].name"
    err = error_of(
        write_toml, GOOD.replace("min = 0\n", 'min = 0\n[[models.churn.inputs]]\nname = "tenure"\n')
    )
    assert err.key == "models.churn.inputs[1].name"


def test_breaker_min_calls_over_window(write_toml: Callable[[str], Path]) -> None:
    text = GOOD.replace(
        'model_name = "churn"', 'model_name = "churn"\nbreaker = { window = 5, min_calls = 9 }'
    )
    err = error_of(write_toml, text)
    assert err.key == "models.churn.tiers[0].breaker.min_calls"


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="file not found"):
        config.load("/nonexistent/portfolio.toml")


@pytest.mark.parametrize(
    ("text", "key", "says"),
    [
        ('[models.m]\ndeadline = 60\n[[models.m.tiers]]\nkind = "default"\n', "models.m.deadline",
         "did you mean 'deadline_ms'?"),
        ('[models.m]\n[[models.m.tiers]]\nname = "x"\nkind = "pyhton"\n'
         '[[models.m.tiers]]\nkind = "default"\n', "models.m.tiers[0].kind",
         "unknown kind 'pyhton' (kind must be one of: python, oip, http, sagemaker, default; "
         "did you mean 'python'?)"),
        ('[models.m]\n[[models.m.tiers]]\nname = "x"\nkind = "python"\ntarget = "a:b"\ntimeout = 5\n'
         '[[models.m.tiers]]\nkind = "default"\n', "models.m.tiers[0].timeout", "did you mean 'timeout_ms'?"),
        ('[server]\nmax_body = 5\n[models.m]\n[[models.m.tiers]]\nkind = "default"\n', "server.max_body",
         "did you mean 'max_body_bytes'?"),
    ],
)  # fmt: skip
def test_a_misspelt_key_or_kind_gets_a_suggestion(
    write_toml: Callable[[str], Path], text: str, key: str, says: str
) -> None:
    err = error_of(write_toml, text)
    assert f": {key}: " in str(err) and says in str(err), str(err)


@pytest.mark.parametrize(
    ("old", "new", "key", "says", "fix"),
    [("deadline_ms = 50", 'deadline_ms = "60ms"', "models.churn.deadline_ms", "got '60ms'",
      "write a number of milliseconds, without quotes or a unit (the key's name says it): deadline_ms = 60"),
     ("deadline_ms = 50", 'deadline_ms = 50\nversion = 3', "models.churn.version", "Expected `str`",
      'quote it: version = "3"')],
)  # fmt: skip
def test_a_value_of_the_wrong_type_gets_the_fix(
    write_toml: Callable[[str], Path], old: str, new: str, key: str, says: str, fix: str
) -> None:
    """ "Expected `int`, got `str`" left a person guessing what to write."""
    err = error_of(write_toml, GOOD.replace(old, new))
    assert err.key == key and says in err.problem and err.fix == fix, str(err)


class _WordingA(msgspec.Struct, forbid_unknown_fields=True, tag_field="kind", tag="a"):
    n: Annotated[int, Meta(ge=1)]
    s: Annotated[str, Meta(pattern="^[a-z]+$")] = "x"


class _WordingB(msgspec.Struct, forbid_unknown_fields=True, tag_field="kind", tag="b"):
    n: int = 1


class _WordingTop(msgspec.Struct):
    t: list[_WordingA | _WordingB]


def test_the_msgspec_wording_config_messages_reads() -> None:
    """config/messages.py reads msgspec's error text (the problem, then `` - at `$.path` ``): a msgspec
    release that words these otherwise fails here first, not in a person's error message."""
    said = []
    for tier in ({"kind": "a", "n": "2"}, {"kind": "a", "n": 0}, {"kind": "a", "n": 1, "x": 1}, {"kind": "a"},
                 {"kind": "c"}, {"kind": "a", "n": 1, "s": "A"}):  # fmt: skip
        with pytest.raises(msgspec.ValidationError) as info:
            msgspec.convert({"t": [tier]}, _WordingTop, strict=True)
        said.append(str(info.value))
    assert said == [
        "Expected `int`, got `str` - at `$.t[0].n`",
        "Expected `int` >= 1 - at `$.t[0].n`",
        "Object contains unknown field `x` - at `$.t[0]`",
        "Object missing required field `n` - at `$.t[0]`",
        "Invalid value 'c' - at `$.t[0].kind`",
        "Expected `str` matching regex '^[a-z]+$' - at `$.t[0].s`",
    ]
