"""One progress flag for every command (``--no-progress``; ``--quiet`` an undocumented alias), and no bars off a terminal."""

import argparse

import pytest

from alexnet.cli import show_progress
from alexnet.cli.main import build_parser
from alexnet.cli.main import main as cli

# Every command that runs a loop long enough to draw a bar (tqdm in engine/, features/, data/).
DRAWS_BARS = [("prepare",), ("data", "synth"), ("train",), ("eval",), ("features",), ("neighbors",), ("report",),
              ("demo",), ("ablate",), ("viz", "neighbors"), ("viz", "confusion")]


def _parsers(parser, path=()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


def test_one_spelling_everywhere():
    parsers = dict(_parsers(build_parser()))
    for path, p in parsers.items():
        for a in p._actions:
            names = set(a.option_strings)
            assert not names & {"--progress", "--no-bar", "--bar", "--silent"}, path
            if "--no-progress" in names:
                assert names == {"--no-progress"} and a.dest == "no_progress" and a.help, (path, names)
            if "--quiet" in names:  # the old spelling still parses, but no help text documents it
                assert names == {"--quiet"} and a.dest == "no_progress" and a.help == argparse.SUPPRESS, (path, names)
    for path in DRAWS_BARS:
        assert "--no-progress" in {o for a in parsers[path]._actions for o in a.option_strings}, path
        assert "--quiet" not in parsers[path].format_help(), path


class _Stream:
    def __init__(self, tty):
        self.tty = tty

    def isatty(self):
        return self.tty


@pytest.mark.parametrize("tty,flag,bars", [(True, False, True), (True, True, False), (False, False, False)])
def test_bars_only_on_a_terminal_and_unless_asked(monkeypatch, tty, flag, bars):
    monkeypatch.setattr("sys.stderr", _Stream(tty))
    assert show_progress(argparse.Namespace(no_progress=flag)) is bars


def test_no_bar_drawn_into_a_pipe(tmp_path, capfd):
    """Without the flag, output that is not a terminal (here a file, as in a log) gets no bar."""
    assert cli(["data", "synth", str(tmp_path / "s"), "--classes", "2", "--train-per-class", "30",
                "--val-per-class", "2", "--size", "16"]) == 0
    err = capfd.readouterr().err
    assert "\r" not in err and "it/s" not in err and "%|" not in err


def test_train_into_a_log_prints_one_line_per_epoch(prepared, tmp_path, capfd):
    """`alexnet train > log 2>&1`: no bars, one line per epoch; --no-progress: neither (only the result)."""
    from helpers import TINY

    sets = [a for s in TINY for a in ("--set", s)]
    assert cli(["train", "--data", str(prepared), "--out", str(tmp_path / "a"), *sets]) == 0
    out, err = capfd.readouterr()
    assert "\r" not in out + err and "it/s" not in out + err
    lines = out.splitlines()
    assert [line.split(":")[0] for line in lines[:-1]] == ["epoch 1/2", "epoch 2/2"], out
    assert "val top-1 err" in lines[0] and lines[-1].startswith("{")
    assert cli(["train", "--data", str(prepared), "--out", str(tmp_path / "b"), *sets, "--no-progress"]) == 0
    out = capfd.readouterr().out
    assert len(out.splitlines()) == 1 and out.startswith("{")


@pytest.mark.parametrize("flags,lines", [([], True), (["--no-progress"], False)])
def test_demo_into_a_log_asks_the_trainer_for_epoch_lines(monkeypatch, tmp_path, flags, lines):
    """`alexnet demo > log` gets the trainer's one line per epoch, as train does (the data steps are stubbed here)."""
    import alexnet.data
    import alexnet.engine.trainer

    class Reached(Exception):
        pass

    def fake_fit(cfg, data, out, resume=False, progress=True, epoch_lines=None, force=False):
        raise Reached(progress, epoch_lines)

    monkeypatch.setattr(alexnet.data, "generate_synth", lambda *a, **k: None)
    monkeypatch.setattr(alexnet.data, "prepare", lambda *a, **k: None)
    monkeypatch.setattr(alexnet.data, "read_meta", lambda *a, **k: {"classes": ["a", "b"], "size": 32})
    monkeypatch.setattr(alexnet.engine.trainer, "fit", fake_fit)
    with pytest.raises(Reached) as e:
        cli(["demo", "--out", str(tmp_path / "d"), "--device", "cpu", *flags])
    assert e.value.args == (False, lines)  # pytest's output is no terminal: no bars either way
