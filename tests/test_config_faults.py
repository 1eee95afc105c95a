"""Bad run configs through the command line: every one is one capped line and exit 2 (issue 17,
items 6, 7 and 10), nothing written; and what stays valid (shipped configs, stored configs)."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import pytest
import yaml
from conftest import TINY

from tuneable_gan.cli import main
from tuneable_gan.clip import MAX_LINE, MAX_LINES
from tuneable_gan.config import from_dict
from tuneable_gan.errors import ConfigError
from tuneable_gan.models import DataSpec
from tuneable_gan.preflight import preflight
from tuneable_gan.resolve import resolve
from tuneable_gan.trainer import GANTrainer
from tuneable_gan.tune import space_checks  # noqa: F401  (imported before the timed calls)

ROOT = Path(__file__).resolve().parents[1]
ERROR = "tuneable-gan: error: "


def run(capsys, *argv: str) -> tuple[int, list[str], str]:
    """(exit code, the error lines, all of stderr)."""
    code = main(list(argv))
    err = capsys.readouterr().err
    return code, [ln for ln in err.splitlines() if ln.startswith(ERROR)], err


def bomb(levels: int, width: int = 9) -> str:
    """An alias bomb as ``data.name``: ``levels`` lists, each of ``width`` aliases of the list
    before, so width**levels strings once expanded."""
    lists = [f"&l0 [{', '.join(['x'] * width)}]"]
    lists += [f"&l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return f"data:\n  name: [{', '.join(lists)}]\n"


@pytest.fixture
def tiny_file(tmp_path: Path) -> Path:
    p = tmp_path / "tiny.yaml"
    p.write_text(yaml.safe_dump({k: v for k, v in TINY.items()}))
    return p


@pytest.mark.parametrize("command", ["validate", "train"])
def test_an_alias_bomb_is_refused_at_once_in_bounded_memory(tmp_path, capsys, command):
    path = tmp_path / "bomb.yaml"
    path.write_text(bomb(7))  # 354 bytes, 4.8 million strings once expanded
    out = tmp_path / "run"
    tracemalloc.start()
    t0 = time.perf_counter()
    code, lines, err = run(capsys, command, str(path), *(["--out", str(out)] * (
        command == "train")))
    seconds, peak = time.perf_counter() - t0, tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert code == 2 and len(lines) == 1, err
    assert lines[0] == (f"{ERROR}{path}: YAML anchors and aliases expand to more than 100000 "
                        "values (an alias bomb?); write the values out or use fewer aliases")
    assert seconds < 0.5 and peak < 5_000_000, (seconds, peak)
    assert not out.exists()


def test_an_alias_bomb_in_set_is_refused(tiny_file, capsys):
    flow = "[&a [x, x, x, x, x, x, x, x, x], " + ", ".join(
        f"&{b} [{', '.join([f'*{a}'] * 9)}]" for a, b in zip("abcdef", "bcdefg")) + "]"
    code, lines, _ = run(capsys, "validate", str(tiny_file), "--set", f"data.name={flow}")
    assert code == 2 and len(lines) == 1 and "--set data.name: YAML anchors" in lines[0]


def test_a_small_bomb_under_the_cap_still_prints_a_short_line(tmp_path, capsys):
    path = tmp_path / "small.yaml"
    path.write_text(bomb(5, width=8))  # 37449 values: accepted; printed in full, 190 KB
    code, lines, _ = run(capsys, "validate", str(path))
    assert code == 2 and len(lines) == 1
    assert lines[0].startswith(f"{ERROR}data.name must be a string, got [['x', 'x'")
    assert len(lines[0]) <= MAX_LINE


def _binary(p: Path) -> None:
    p.write_bytes(bytes(range(256)) * 4)


def _latin1(p: Path) -> None:
    p.write_bytes("data: {name: caf\xe9}\n".encode("latin-1"))


def _directory(p: Path) -> None:
    p.mkdir()


def _list(p: Path) -> None:
    p.write_text("- data\n- model\n")


def _deep(p: Path) -> None:
    p.write_text("data: " + "[" * 20000 + "]" * 20000 + "\n")


def _recursive(p: Path) -> None:
    p.write_text("data: &a {name: [*a]}\n")


def _malformed(p: Path) -> None:
    p.write_text("data: {name: digits\n")


@pytest.mark.parametrize("make, says", [
    (_binary, "is a binary file, not YAML text"),
    (_latin1, "is not UTF-8 text (byte 0xe9 at offset 16); save it as UTF-8"),
    (_directory, "is a directory, not a YAML file"),
    (_list, ": expected a mapping of config sections, got list"),
    (_deep, ": YAML nested too deeply to read"),
    (_recursive, ": a YAML alias refers to a value that contains it"),
    (_malformed, ": line 2 is not valid YAML (expected ',' or '}', but got '<stream end>')"),
], ids=lambda x: getattr(x, "__name__", "")[1:] or None)
@pytest.mark.parametrize("command", ["validate", "train"])
def test_a_bad_file_is_one_line_naming_it(tmp_path, capsys, make, says, command):
    path = tmp_path / "run.yaml"
    make(path)
    out = tmp_path / "out"
    argv = [command, str(path)] + (["--out", str(out)] if command == "train" else [])
    code, lines, err = run(capsys, *argv)
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"{ERROR}{path}") and says in lines[0], lines[0]
    assert not out.exists()


def test_an_unreadable_file_is_one_line_naming_it(tmp_path, capsys, monkeypatch):
    path = tmp_path / "run.yaml"
    path.write_text("data: {name: digits}\n")

    def denied(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied")

    # chmod cannot stop root (CI runs as root): make the read itself fail.
    monkeypatch.setattr(Path, "read_bytes", denied)
    code, lines, _ = run(capsys, "validate", str(path))
    assert code == 2 and lines == [f"{ERROR}cannot read {path}: Permission denied"]


def test_a_megabyte_value_or_key_gives_one_capped_line(tmp_path, capsys):
    value = tmp_path / "value.yaml"
    value.write_text("data:\n  name: " + "x" * 1_000_000 + "\n")
    code, lines, _ = run(capsys, "validate", str(value))
    assert code == 2 and len(lines) == 1 and "data.name must be one of" in lines[0]
    assert len(lines[0]) <= MAX_LINE
    small = tmp_path / "small.yaml"
    small.write_text("data: {name: digits}\n")
    code, lines, _ = run(capsys, "validate", str(small), "--set", "data." + "x" * 1_000_000 + "=1")
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"{ERROR}unknown key 'data.xxx")
    assert len(lines[0]) == MAX_LINE and lines[0].endswith("...")


def test_thousands_of_problems_print_a_bounded_list(tmp_path, capsys):
    path = tmp_path / "many.yaml"
    path.write_text(yaml.safe_dump({"data": {f"k{i}": 1 for i in range(1000)}}))
    code, lines, err = run(capsys, "validate", str(path))
    assert code == 2 and len(lines) == MAX_LINES + 1
    assert lines[-1] == f"{ERROR}... and {1000 - MAX_LINES} more problems"


BUILD_REFUSED = [
    ({"model.conditional": True, "regularizer.name": "gp"},
     "regularizer.name=gp is not available for a conditional D (model.conditional=true)"),
    ({"data.resolution": 64}, "data.resolution must be one of 8, 16, 32 for model.arch=dcgan; "
     "got 64x64"),
    ({"model.arch": "sngan"}, "data.resolution must be 32 for model.arch=sngan; got 8"),
    ({"data.name": "faces100", "model.conditional": True},
     "model.conditional=true needs labelled data"),
]


@pytest.mark.parametrize("sets, says", BUILD_REFUSED, ids=["gp-conditional", "dcgan-64",
                                                           "sngan-8", "conditional-unlabelled"])
def test_validate_refuses_what_train_refuses_before_its_first_step(tmp_path, capsys, sets,
                                                                   says):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(TINY | sets))
    code, lines, _ = run(capsys, "validate", str(path))
    assert code == 2 and len(lines) == 1 and says in lines[0], lines
    out = tmp_path / "out"
    code, lines, _ = run(capsys, "train", str(path), "--out", str(out), "--quiet")
    assert code == 2 and len(lines) == 1 and says in lines[0] and not out.exists()


@pytest.mark.parametrize("sets", [s for s, _ in BUILD_REFUSED])
def test_preflight_refuses_with_the_trainers_own_words(sets):
    cfg = from_dict(TINY | sets)
    with pytest.raises(ConfigError) as trained:
        GANTrainer(cfg, device="cpu")
    with pytest.raises(ConfigError) as checked:
        preflight(cfg)
    assert checked.value.problems == trained.value.problems


@pytest.mark.parametrize("sets, key, setting, used", [
    ({"regularizer.start": 100}, "regularizer.start=100", "regularizer.name=diggan",
     "regularizer.name=lecam"),
    ({"augment.advaug_step": 0.05}, "augment.advaug_step=0.05", "augment.advaug=off",
     "augment.advaug other than off"),
    ({"sparsity.round_steps": 3}, "sparsity.round_steps=3", "sparsity.level=0.0",
     "sparsity.level other than 0.0"),
    ({"optim.momentum": 0.5}, "optim.momentum=0.5", "optim.name=adam", "optim.name=sgd"),
    ({"regularizer.name": "lecam", "regularizer.pairing": "magnitude"},
     "regularizer.pairing='magnitude'", "regularizer.name=lecam", "regularizer.name=diggan"),
])
@pytest.mark.parametrize("command", ["validate", "train"])
def test_a_key_the_method_does_not_read_is_refused(tmp_path, capsys, sets, key, setting, used,
                                                    command):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(TINY | sets))
    out = tmp_path / "out"
    argv = [command, str(path)] + (["--out", str(out)] if command == "train" else [])
    code, lines, _ = run(capsys, *argv)
    assert code == 2 and lines == [
        f"{ERROR}{key} is set but {setting} does not read it; it is read with {used} (remove "
        f"it, or change {setting.split('=')[0]})"]
    assert not out.exists()


def test_defaults_stored_configs_and_set_switches_are_not_refused(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    # Written at their defaults: nothing to ignore.
    path.write_text(yaml.safe_dump(TINY | {"regularizer.start": None, "optim.momentum": 0.9}))
    assert run(capsys, "validate", str(path))[0] == 0
    # A run's stored config lists every key, resolved (none's weight 0, the AdvAug form, ...).
    stored = tmp_path / "config.yaml"
    cfg = resolve(from_dict(TINY | {"regularizer.name": "none", "regularizer.weight": None}),
                  DataSpec((1, 8, 8), 10))
    stored.write_text(cfg.to_yaml())
    assert run(capsys, "validate", str(stored))[0] == 0
    # --set switching the method leaves the file's DigGAN weight unread: a warning.
    code, lines, err = run(capsys, "validate", str(path), "--set", "regularizer.name=none")
    assert code == 0 and lines == []
    assert ("tuneable-gan: warning: regularizer.weight=10.0 is set but regularizer.name=none "
            "does not read it") in err


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_validates(path, capsys):
    code, lines, err = run(capsys, "validate", str(path))
    assert code == 0 and lines == [], err
    assert f"# {path}: valid" in err


def test_the_reads_table_covers_every_regularizer_and_what_it_fills():
    from tuneable_gan.config import Config, valid_keys
    from tuneable_gan.reads import READERS, REGULARIZER_READS
    from tuneable_gan.regularizers import REGULARIZERS

    assert sorted(REGULARIZER_READS) == REGULARIZERS.names()
    for name in REGULARIZERS.names():
        filled = set(REGULARIZERS.get(name).defaults(Config()))
        # none fills weight and every for the base class's sake, and reads neither.
        assert name == "none" or filled <= set(REGULARIZER_READS[name]), name
    assert set(READERS) | {r.control for r in READERS.values()} <= set(valid_keys())
