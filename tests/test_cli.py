"""The CLI: exit codes, one-line errors, nothing half-written, --resume rules."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import TINY

from tuneable_gan.cli import main
from tuneable_gan.config import from_dict


@pytest.fixture
def cfg_file(tmp_path):
    p = tmp_path / "tiny.yaml"
    p.write_text(from_dict(TINY).to_yaml())
    return p


def run(capsys, *argv):
    code = main(list(argv))
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def error_lines(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.startswith("tuneable-gan: error:")]


def test_train_writes_log_checkpoints_and_samples(tmp_path, cfg_file, capsys):
    out = tmp_path / "run"
    code, _, err = run(capsys, "train", str(cfg_file), "--out", str(out), "--quiet")
    assert code == 0, err
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert all(r["diverged"] is False and r["steps_per_s"] > 0 for r in rows)
    assert (out / "checkpoints" / "LATEST").read_text().strip() == "step_0000006"
    assert (out / "samples.png").stat().st_size > 0


def test_resume_continues_and_equals_a_straight_run(tmp_path, cfg_file, capsys):
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert run(capsys, "train", str(cfg_file), "--out", str(straight), "--quiet")[0] == 0
    assert run(capsys, "train", str(cfg_file), "--out", str(split), "--quiet",
               "--set", "train.steps=3")[0] == 0
    assert run(capsys, "train", str(cfg_file), "--out", str(split), "--quiet", "--resume")[0] == 0

    def strip(p):
        return [{k: v for k, v in json.loads(ln).items() if k != "steps_per_s"}
                for ln in (p / "metrics.jsonl").read_text().splitlines()]

    assert strip(split) == strip(straight)
    a = torch.load(straight / "checkpoints/step_0000006/state.pt", weights_only=True)
    b = torch.load(split / "checkpoints/step_0000006/state.pt", weights_only=True)
    assert all(torch.equal(a["G"][k], b["G"][k]) for k in a["G"])
    assert all(torch.equal(a["D"][k], b["D"][k]) for k in a["D"])


@pytest.mark.parametrize("sets,needle", [
    (["regularizer.wieght=1"], "did you mean 'regularizer.weight'"),
    (["data.fraction=0"], "data.fraction must be in (0.0, 1.0], got 0.0"),
    (["regularizer.ema=1"], "regularizer.ema must be in [0.0, 1.0), got 1.0"),
    (["regularizer.weight=-1"], "regularizer.weight must be in [0.0, inf]"),
    (["data.name=mnist"], "data.name must be one of"),
    (["model.arch=vit"], "model.arch must be one of"),
    (["sparsity.level=0.5", "model.arch=toy", "data.name=toy2pt", "augment.diffaugment="],
     "sparsity.level > 0 prunes G's conv weights and model.arch=toy has none"),
    (["data.name=cifar10"], "data.root is required for data.name=cifar10"),
    (["model.arch=sngan"], "data.resolution must be 32 for model.arch=sngan; got 8"),
    (["train.device=cuda"] if not torch.cuda.is_available() else ["data.fraction=2"],
     "no CUDA device is visible" if not torch.cuda.is_available() else "must"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, cfg_file, capsys, sets,
                                                          needle):
    out = tmp_path / "run"
    argv = ["train", str(cfg_file), "--out", str(out), "--quiet"]
    for s in sets:
        argv += ["--set", s]
    code, _, err = run(capsys, *argv)
    assert code == 2
    lines = error_lines(err)
    assert len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in err and not out.exists()


def test_out_dir_rules(tmp_path, cfg_file, capsys):
    out = tmp_path / "run"
    base = ["train", str(cfg_file), "--out", str(out), "--quiet"]
    code, _, err = run(capsys, *base, "--resume")
    assert code == 2 and "holds no run" in err
    assert run(capsys, *base, "--set", "train.steps=2")[0] == 0
    code, _, err = run(capsys, *base)
    assert code == 2 and "holds a run already; pass --resume" in err
    code, _, err = run(capsys, *base, "--resume", "--set", "regularizer.weight=5",
                       "--set", "optim.d_lr=0.1")
    assert code == 2 and "keys differ from its config: optim.d_lr, regularizer.weight" in err
    (out / "checkpoints" / "step_0000002" / "state.pt").write_bytes(b"not a checkpoint")
    code, _, err = run(capsys, *base, "--resume")
    assert code == 2 and len(error_lines(err)) == 1 and "corrupt checkpoint" in err
    other = tmp_path / "other"
    other.mkdir()
    (other / "x.txt").write_text("x")
    code, _, err = run(capsys, "train", str(cfg_file), "--out", str(other), "--quiet")
    assert code == 2 and "not an empty directory" in err


def test_diverged_run_exits_3_and_logs_it(tmp_path, cfg_file, capsys):
    out = tmp_path / "run"
    code, _, err = run(capsys, "train", str(cfg_file), "--out", str(out), "--quiet",
                       "--set", "optim.d_lr=1e30", "--set", "optim.g_lr=1e30",
                       "--set", "train.steps=50", "--set", "regularizer.name=none")
    assert code == 3 and "diverged at step" in err
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["diverged"] is True


def test_validate(cfg_file, capsys):
    code, out, _ = run(capsys, "validate", str(cfg_file))
    assert code == 0 and "regularizer:" in out
    code, _, err = run(capsys, "validate", str(cfg_file), "--set", "data.fraction=0",
                       "--set", "regularizer.ema=3")
    assert code == 2 and len(error_lines(err)) == 2


def test_console_script_exit_code(tmp_path):
    r = subprocess.run([sys.executable, "-m", "tuneable_gan.cli", "validate",
                        str(tmp_path / "missing.yaml")], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().startswith("tuneable-gan: error: config file not found")


def test_version_names_the_package_and_the_installed_libraries(capsys):
    import re
    from importlib.metadata import version
    from pathlib import Path

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    out = capsys.readouterr().out.strip()
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    declared = re.search(r'^version = "([^"]+)"', pyproject, flags=re.M).group(1)
    assert out.startswith(f"tuneable-gan {declared} (")
    assert f"torch {version('torch')}" in out and f"ray {version('ray')}" in out


def test_top_level_help_lists_every_command_and_its_examples_exist(capsys):
    import re
    import shlex
    from pathlib import Path

    from tuneable_gan.cli import COMMANDS

    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    listed = re.findall(r"^    (\w+) +\S", out, flags=re.M)
    assert sorted(listed) == sorted(COMMANDS)
    root = Path(__file__).parents[1]
    examples = [shlex.split(ln) for ln in out.splitlines() if ln.startswith("  tuneable-gan ")]
    assert len(examples) == 4
    for argv in examples:
        assert argv[1] in COMMANDS
        for arg in argv[2:]:
            if arg.startswith(("configs/", "search_spaces/")):
                assert (root / arg).is_file(), arg
