"""``alexnet ablate``: studies, time to a training error, tables, resume, and the command's errors."""

import json

import pytest

from alexnet.ablation import STUDIES, markdown, resolve, run_study
from alexnet.ablation.runner import run_dir, slug, summarize_run, time_to_target
from alexnet.cli.main import main as cli
from alexnet.engine.config import load_config
from alexnet.errors import UserError

from helpers import TINY


def test_every_study_override_is_a_valid_config_key():
    for study in STUDIES.values():
        assert len(study.arms) >= 2
        for arm in study.arms:
            load_config("ablate", [*study.common, *arm.overrides])  # raises on an unknown key or bad value


def test_resolve():
    assert [s.name for s in resolve("all")] == list(STUDIES)
    assert [s.name for s in resolve("lrn")] == ["lrn"]
    with pytest.raises(UserError, match="unknown study 'lrm'"):
        resolve("lrm")


def test_slug_is_a_folder_name():
    assert slug("1 tower, half width") == "1-tower-half-width"
    assert slug("tanh lr=0.05") == "tanh-lr0.05"


def _epochs(times, steps_per_epoch=10):
    return [{"kind": "epoch", "epoch": e, "step": (e + 1) * steps_per_epoch, "epoch_time_s": t, "train_loss": 1.0}
            for e, t in enumerate(times)]


def test_time_to_target_interpolates_inside_the_epoch():
    epochs = _epochs([10.0, 20.0])
    steps = [{"kind": "step", "epoch": 0, "step": 5, "train_top1_err": 0.6},
             {"kind": "step", "epoch": 0, "step": 10, "train_top1_err": 0.4},
             {"kind": "step", "epoch": 1, "step": 15, "train_top1_err": 0.24},
             {"kind": "step", "epoch": 1, "step": 20, "train_top1_err": 0.1}]
    got = time_to_target(steps, epochs, target=0.25)
    assert got == {"reached": True, "epochs": 1.5, "seconds": 10.0 + 0.5 * 20.0, "step": 15}
    never = time_to_target(steps[:2], epochs, target=0.25)
    assert never["reached"] is False and never["epochs"] == 2 and never["seconds"] == 30.0


def _row(arm, seed, err, train_err=0.05, to=None):
    return {"study": "x", "arm": arm, "group": arm.split()[0], "seed": seed, "val_top1_err": err,
            "best_val_top1_err": err, "best_epoch": 3, "train_top1_err": train_err, "train_loss": 0.3,
            "first_epoch_train_loss": 0.9, "curve": [], "train_err_curve": [], "steps_per_epoch": 10,
            "to_target": to or {"reached": True, "epochs": 1.0, "seconds": 5.0, "step": 10}}


def test_markdown_mean_std_and_paired_difference():
    study = STUDIES["lrn"]
    rows = [_row("LRN", 0, 0.10), _row("LRN", 1, 0.12), _row("no LRN", 0, 0.13), _row("no LRN", 1, 0.13)]
    md = markdown(study, rows)
    assert "| LRN | 11.00 ± 1.41% |" in md
    assert "| no LRN | 13.00 ± 0.00% | +2.00 ± 1.41 |" in md  # per seed: +3 and +1 points
    assert "2 seed(s) per arm" in md


def test_markdown_relu_vs_tanh_picks_the_best_lr_of_each_activation():
    study = STUDIES["relu-vs-tanh"]
    fast = {"reached": True, "epochs": 0.5, "seconds": 10.0, "step": 5}
    slow = {"reached": True, "epochs": 2.0, "seconds": 44.0, "step": 20}
    never = {"reached": False, "epochs": 2, "seconds": 40.0, "step": 20}
    rows = [_row("relu lr=0.01", 0, 0.1, to=fast), _row("relu lr=0.02", 0, 0.1, to=slow),
            _row("tanh lr=0.01", 0, 0.1, to=never), _row("tanh lr=0.02", 0, 0.1, to=slow)]
    md = markdown(study, rows)
    assert "tanh needs **4.00x** the epochs and 4.40x the seconds" in md
    assert "| tanh lr=0.01 | - | - | 0/1 |" in md


def test_bad_arguments_are_one_line_errors(tmp_path, capsys):
    assert cli(["ablate", "--data", str(tmp_path / "missing"), "--study", "lrn"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing" in err
    assert cli(["ablate", "--data", str(tmp_path), "--study", "nope"]) == 2
    assert cli(["ablate", "--data", str(tmp_path), "--study", "lrn", "--seeds", "0"]) == 2
    assert "at least 1" in capsys.readouterr().err


@pytest.mark.slow
def test_study_trains_every_arm_and_resumes(prepared, tmp_path):
    """Two arms x two seeds on the tiny dataset; a second call trains nothing and gives the same rows."""
    study = STUDIES["pooling"]
    tiny = [*TINY, "run.precision=fp32", "model.bias=0.0"]
    rows = run_study(study, prepared, tmp_path, config="ablate", seeds=2, epochs=2, overrides=tiny,
                     announce=False)
    assert [(r["arm"], r["seed"]) for r in rows] == [(a.label, s) for a in study.arms for s in (0, 1)]
    for r in rows:
        assert r["epochs"] == 2 and 0 <= r["val_top1_err"] <= 1 and 0 <= r["train_top1_err"] <= 1
        assert (run_dir(tmp_path, study, study.arms[0], 0) / "result.json").is_file()
    # different seeds, different runs; same seed, different arms, different runs
    assert rows[0]["train_loss"] != rows[1]["train_loss"] and rows[0]["train_loss"] != rows[2]["train_loss"]

    def no_training(*a, **k):
        raise AssertionError("a finished run was trained again")

    again = run_study(study, prepared, tmp_path, config="ablate", seeds=2, epochs=2, overrides=tiny,
                      announce=False, fit=no_training)
    assert json.dumps(again) == json.dumps(rows)
    # an interrupted run (no result.json yet) is finished from its last.ckpt
    folder = run_dir(tmp_path, study, study.arms[1], 1)
    (folder / "result.json").unlink()
    calls = []

    def spy(cfg, data, out, resume, progress):
        from alexnet.engine.trainer import fit

        calls.append(resume)
        return fit(cfg, data, out, resume=resume, progress=progress)

    rerun = run_study(study, prepared, tmp_path, config="ablate", seeds=2, epochs=2, overrides=tiny,
                      announce=False, fit=spy)
    assert calls == [True] and rerun[-1]["val_top1_err"] == rows[-1]["val_top1_err"]
    assert summarize_run(folder)["epochs"] == 2


@pytest.mark.slow
def test_a_run_another_study_already_made_is_reused_not_trained(prepared, tmp_path):
    """The base recipe is the first arm of pooling and of towers (towers=None and towers=2 build the same
    alexnet-small): towers trains only its two one-tower arms and takes the other run's figures."""
    from alexnet.ablation.runner import finished_runs, run_identity

    tiny = [*TINY, "run.precision=fp32", "model.bias=0.0", "run.epochs=1"]
    pooling = run_study(STUDIES["pooling"], prepared, tmp_path, config="ablate", seeds=1, epochs=1,
                        overrides=tiny, announce=False)
    trained = []

    def spy(cfg, data, out, resume, progress):
        from alexnet.engine.trainer import fit

        trained.append(cfg.model.towers)
        return fit(cfg, data, out, resume=resume, progress=progress)

    towers = run_study(STUDIES["towers"], prepared, tmp_path, config="ablate", seeds=1, epochs=1,
                       overrides=tiny, announce=False, fit=spy)
    assert trained == [1, 1]
    assert towers[0]["same_run_as"] == "pooling/3-2-overlapping/seed-0"
    for key in ("val_top1_err", "train_loss", "curve"):
        assert towers[0][key] == pooling[0][key]
    shared = run_dir(tmp_path, STUDIES["towers"], STUDIES["towers"].arms[0], 0)
    assert (shared / "last.ckpt").is_file() and summarize_run(shared)["epochs"] == 1
    assert "same_run_as" not in towers[1] and towers[1]["val_top1_err"] is not None

    # A run made in another precision (or on other data) is not the same run.
    source = run_dir(tmp_path, STUDIES["pooling"], STUDIES["pooling"].arms[0], 0)
    cfg = load_config("ablate", [*STUDIES["towers"].arms[0].overrides, *tiny, "run.seed=0", "run.log_every=10",
                                 "run.epochs=1"])
    assert finished_runs(tmp_path, prepared)[run_identity(cfg, prepared)] == source
    metrics = source / "metrics.jsonl"
    metrics.write_text(metrics.read_text().replace('"precision": "fp32"', '"precision": "bf16"', 1))
    assert run_identity(cfg, prepared) not in finished_runs(tmp_path, prepared)
    assert finished_runs(tmp_path, tmp_path / "elsewhere") == {}
