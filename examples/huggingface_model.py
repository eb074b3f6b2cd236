"""A Hugging Face transformers model under FIRE PBT: a small GPT-2 built from a config (no
download) learning a text, with the learning rate and weight decay tuned as a schedule.

    pip install 'firepbt[huggingface]'
    python examples/huggingface_model.py         # 12 workers x 600 steps, a minute or two
    firepbt run gpt2-text --factory huggingface_model:factory --method pbt   # (from examples/)

Any model whose forward takes the batch and returns .loss works the same way (BERT for
classification with "labels" in the examples, T5, ...); the datasets are any map-style
collection of examples (a datasets.Dataset, a list of dicts).

The model keeps GPT-2's dropout (0.1): the adapter seeds torch's global generator at each
training call from the worker's seed and data position, so two runs give the same evaluations
and a stopped and resumed run the uninterrupted one's (tests/test_integration_huggingface.py).
"""

from __future__ import annotations

import sys

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from firepbt import ExperimentConfig, LogUniform, Space, run
from firepbt.integrations.huggingface import TrainingSettings, huggingface_factory

TEXT = ("population based training tunes a schedule while the network trains; "
        "fire pbt keeps the learning rate high where a greedy tuner would decay it. ")
VOCAB = sorted(set(TEXT))
LENGTH = 24


def windows(n: int, seed: int) -> list[dict[str, list[int]]]:
    ids = [VOCAB.index(c) for c in TEXT * 3]
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(ids) - LENGTH, (n,), generator=g).tolist()
    return [{"input_ids": ids[s:s + LENGTH]} for s in starts]


def model() -> GPT2LMHeadModel:
    return GPT2LMHeadModel(GPT2Config(vocab_size=len(VOCAB), n_positions=LENGTH, n_embd=32,
                                      n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0,
                                      loss_type="ForCausalLM"))


factory = huggingface_factory(model, windows(2000, 0), windows(64, 1),
                              settings=TrainingSettings(per_device_train_batch_size=16,
                                                        per_device_eval_batch_size=64,
                                                        warmup_steps=20))
SPACE = Space({"learning_rate": LogUniform(3e-4, 1e-2), "weight_decay": LogUniform(1e-4, 1e-1)})


def main(store: str = "runs/huggingface-example") -> None:
    torch.set_num_threads(1)
    summary = run(ExperimentConfig(task="gpt2-text", method="fire", workers=12, steps=600,
                                   ready_interval=60, eval_interval=5, executor="local"),
                  store, factory=factory, space=SPACE)
    print(f"lowest validation loss {summary.top_value:.4f} (worker {summary.top_worker} at "
          f"step {summary.top_step}); 'firepbt report {store}' draws it")


if __name__ == "__main__":
    main(*sys.argv[1:])
