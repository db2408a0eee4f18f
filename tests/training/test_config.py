"""Settings: layering, parsing and validation."""

from __future__ import annotations

import pytest

from core.errors import UserError
from training.config import build_config, parse_assignments, read_config_file, read_environment
from training.runner import resolve_config
from training.targets import Target


def local_target(tmp_path) -> Target:
    return Target("local", tmp_path, f"sqlite:///{tmp_path}/m.db", str(tmp_path / "runs"), None)


def test_later_layers_win_and_task_profile_defaults_sit_under_them(tmp_path):
    config_file = tmp_path / "c.yaml"
    config_file.write_text("learning_rate: 0.01\nwarmup_steps: 3\n")
    layers = [
        read_config_file(str(config_file)),
        read_environment({"WARMUP_STEPS": "7", "TASK": "summarize"}),
        parse_assignments(["--warmup_steps=9"]),
    ]
    cfg = resolve_config(layers, local_target(tmp_path))
    assert cfg.task == "summarize"
    assert cfg.profile == "smoke"  # the local target's default
    assert cfg.learning_rate == 0.01  # file beats the task's smoke default (2e-3)
    assert cfg.warmup_steps == 9  # command line beats environment beats file
    assert cfg.num_beams == 2  # the task's smoke default where nobody set it


def test_chameleon_target_defaults_to_full_profile(tmp_path):
    target = local_target(tmp_path)
    target.cloud = "chameleon"
    assert resolve_config([{}], target).profile == "full"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"learning_rate": "fast"}, "learning_rate must be a number"),
        ({"learning_rate": "2"}, "learning_rate must be in (0, 1)"),
        ({"num_train_epochs": "1.5"}, "num_train_epochs must be a whole number"),
        ({"per_device_train_batch_size": "0"}, "per_device_train_batch_size must be at least 1"),
        ({"optim": "adagrad"}, "optim must be one of adamw, sgd"),
        ({"precision": "fp8"}, "precision must be one of"),
        ({"strategy": "zero3"}, "unknown STRATEGY"),
        ({"task": "translate"}, "unknown TASK 'translate'"),
        ({"profile": "huge"}, "unknown PROFILE 'huge'"),
        ({"resume": "maybe"}, "resume must be 1 or 0"),
        ({"run_name": "a b"}, "RUN_NAME 'a b' may hold only"),
    ],
)
def test_bad_values_name_the_setting(settings, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_config([settings])


def test_unknown_keys_are_errors(tmp_path):
    with pytest.raises(UserError, match="unknown setting learnig_rate"):
        parse_assignments(["learnig_rate=1e-4"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: 0.1\n")
    with pytest.raises(UserError, match="unknown setting lr"):
        read_config_file(str(bad))
    with pytest.raises(UserError, match="is not key=value"):
        parse_assignments(["learning_rate"])


def test_a_make_variable_in_lower_case_is_read_like_its_upper_case_name():
    # `make train max_steps=80` reaches the CLI as max_steps=80: it must not be lost.
    assert read_environment({"max_steps": "80", "SAVE_STEPS": "20"}) == {
        "max_steps": "80",
        "save_steps": "20",
    }
    assert read_environment({"MAX_STEPS": "80", "max_steps": "80"}) == {"max_steps": "80"}


def test_a_setting_given_in_both_cases_with_different_values_is_one_error():
    with pytest.raises(UserError, match="MAX_STEPS=80 and max_steps=90 are both set"):
        read_environment({"MAX_STEPS": "80", "max_steps": "90"})
