"""The smoke model each task builds: long smoke rows fit, whatever the architecture's limit;
its tokenizer is the same in every process."""

import json
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO
from training.models import build_smoke
from training.tasks import TASKS


@pytest.mark.parametrize("task_name", sorted(TASKS))
def test_smoke_model_takes_rows_of_smoke_seq_len(task_name, tmp_path):
    from transformers import AutoConfig, AutoModel

    task = TASKS[task_name]
    train = task.generate(60, seed=1)
    seq_len = 1024  # longer than every tiny config's own position table
    labels = list(getattr(task, "labels", []))
    source = build_smoke(task, train, 1, labels, tmp_path / "m", seq_len=seq_len)

    config = AutoConfig.from_pretrained(source.location)
    assert getattr(config, "max_position_embeddings", -1) in (-1, seq_len)
    model = AutoModel.from_pretrained(source.location)
    ids = torch.ones((1, seq_len), dtype=torch.long)
    with torch.no_grad():
        if task.kind == "seq2seq":
            model(input_ids=ids, decoder_input_ids=ids[:, :8])
        else:
            model(input_ids=ids)


def test_the_smoke_tokenizer_is_the_same_in_every_process():
    """A seed reproduces a smoke run only if each process builds the same vocabulary from the
    same data (Python's and Rust's hash seeds differ from one process to the next)."""
    build = (
        "import json, sys; from training.tasks import TASKS; from training.tokenizer import"
        " train_tokenizer; task = TASKS['summarize']; train = task.generate(200, seed=3);"
        " texts = train[task.text_column].tolist() + train[task.target_column].tolist();"
        " json.dump(train_tokenizer(texts, 'bart').get_vocab(), sys.stdout)"
    )
    vocabularies = [
        json.loads(
            subprocess.run(
                [sys.executable, "-c", build], cwd=REPO, capture_output=True, text=True, check=True
            ).stdout
        )
        for _ in range(3)
    ]
    assert len(vocabularies[0]) > 100
    assert vocabularies[1] == vocabularies[0] and vocabularies[2] == vocabularies[0]
