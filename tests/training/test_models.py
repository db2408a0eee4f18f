"""The smoke model each task builds: long smoke rows fit, whatever the architecture's limit."""

import pytest
import torch

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
