"""The smoke model each task builds: long smoke rows fit, whatever the architecture's limit;
its tokenizer and initial weights are the same in every process (each worker builds its own)."""

import json
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO, save_smoke_model
from training.tasks import TASKS


@pytest.mark.parametrize("task_name", sorted(TASKS))
def test_smoke_model_takes_rows_of_smoke_seq_len(task_name, tmp_path):
    from transformers import AutoConfig, AutoModel

    task = TASKS[task_name]
    train = task.generate(60, seed=1)
    seq_len = 1024  # longer than every tiny config's own position table
    labels = list(getattr(task, "labels", []))
    folder = save_smoke_model(task, train, 1, labels, tmp_path / "m", seq_len=seq_len)

    config = AutoConfig.from_pretrained(folder)
    assert getattr(config, "max_position_embeddings", -1) in (-1, seq_len)
    model = AutoModel.from_pretrained(folder)
    ids = torch.ones((1, seq_len), dtype=torch.long)
    with torch.no_grad():
        if task.kind == "seq2seq":
            model(input_ids=ids, decoder_input_ids=ids[:, :8])
        else:
            model(input_ids=ids)


def in_fresh_processes(code: str, times: int) -> list:
    """What `code` writes as JSON, in `times` Python processes of their own (each with its own
    hash seeds)."""
    return [
        json.loads(
            subprocess.run(
                [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
            ).stdout
        )
        for _ in range(times)
    ]


def test_the_smoke_tokenizer_is_the_same_in_every_process():
    """A seed reproduces a smoke run only if each process builds the same vocabulary from the
    same data (Python's and Rust's hash seeds differ from one process to the next)."""
    vocabularies = in_fresh_processes(
        "import json, sys; from training.tasks import TASKS; from training.tokenizer import"
        " train_tokenizer; task = TASKS['summarize']; train = task.generate(200, seed=3);"
        " texts = train[task.text_column].tolist() + train[task.target_column].tolist();"
        " json.dump(train_tokenizer(texts, 'bart').get_vocab(), sys.stdout)",
        3,
    )
    assert len(vocabularies[0]) > 100
    assert vocabularies[1] == vocabularies[0] and vocabularies[2] == vocabularies[0]


def test_every_process_builds_the_same_smoke_model():
    """Each worker builds the smoke model itself: DDP and FSDP ranks, a restarted worker and a
    bench cell must all start from the same weights, with labels named as the run's."""
    built = in_fresh_processes(
        "import hashlib, json, sys; from training.models import build_smoke;"
        " from training.tasks import TASKS; task = TASKS['classify'];"
        " labels = list(task.labels); train = task.generate(200, seed=3);"
        " tok, model = build_smoke(task, train, 7, labels); digest = hashlib.sha256();"
        " [digest.update(v.numpy().tobytes()) for v in model.state_dict().values()];"
        " json.dump([digest.hexdigest(), model.config.id2label], sys.stdout)",
        2,
    )
    assert built[0] == built[1]
    assert list(built[0][1].values()) == list(TASKS["classify"].labels)


def test_a_run_recorded_with_a_driver_built_model_still_continues(tmp_path):
    """Runs recorded before workers built the smoke model name the folder the driver built it
    into (kind "built"): continuing one loads that folder, labels and all."""
    from training.config import TrainConfig
    from training.models import ModelSource, build_or_load

    task = TASKS["classify"]
    labels = list(task.labels)
    train = task.generate(60, seed=1)
    folder = save_smoke_model(task, train, 1, labels, tmp_path / "base_model")

    tokenizer, model = build_or_load(
        task, ModelSource(str(folder), "built"), TrainConfig(), labels, train
    )
    assert model.config.id2label == dict(enumerate(labels))
    assert tokenizer("a b c")["input_ids"]
