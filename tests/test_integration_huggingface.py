"""A tiny randomly initialised GPT-2 (transformers, built from a config: no download) under FIRE
PBT (firepbt.integrations.huggingface), on text the test makes."""

from __future__ import annotations

import textwrap

import pytest
import torch

transformers = pytest.importorskip("transformers")

import integration_checks as checks  # noqa: E402

from firepbt import ExperimentConfig, LogUniform, Space, resume, run  # noqa: E402
from firepbt.errors import ConfigError  # noqa: E402
from firepbt.integrations.huggingface import (  # noqa: E402
    HuggingFaceTrainable,
    TrainingSettings,
    huggingface_factory,
)
from firepbt.trainable import clone_state  # noqa: E402

TEXT = "the cat sat on the mat. the dog sat on the log. "
VOCAB = sorted(set(TEXT))
LENGTH = 12


def examples(n, seed):
    """``n`` windows of the text, as a ``datasets``-style list of {"input_ids": [...]}."""
    g = torch.Generator().manual_seed(seed)
    ids = [VOCAB.index(c) for c in TEXT * 4]
    starts = torch.randint(0, len(ids) - LENGTH, (n,), generator=g).tolist()
    return [{"input_ids": ids[s:s + LENGTH]} for s in starts]


TRAIN, EVAL = examples(512, 0), examples(32, 1)


def tiny_gpt2():
    cfg = transformers.GPT2Config(vocab_size=len(VOCAB), n_positions=LENGTH, n_embd=16,
                                  n_layer=2, n_head=2, resid_pdrop=0.0, embd_pdrop=0.0,
                                  attn_pdrop=0.0, bos_token_id=0, eos_token_id=0,
                                  loss_type="ForCausalLM")
    return transformers.GPT2LMHeadModel(cfg)


SETTINGS = TrainingSettings(per_device_train_batch_size=8, per_device_eval_batch_size=32,
                            warmup_steps=10)
SPACE = Space({"learning_rate": LogUniform(3e-4, 3e-2)})
CFG = dict(task="hf-tiny-gpt2", method="fire", workers=12, steps=600, ready_interval=60,
           eval_interval=5, seed=1, executor="local")


def factory():
    return huggingface_factory(tiny_gpt2, TRAIN, EVAL, settings=SETTINGS)




@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    path = tmp_path_factory.mktemp("hf") / "s"
    return checks.uninterrupted(path, CFG, factory(), SPACE)


@pytest.mark.slow
def test_fire_on_a_tiny_gpt2_evolves_and_hands_weights_down(uninterrupted):
    evals, decisions = uninterrupted
    checks.assert_fire_evolves(decisions)
    first = [v for _r, w, s, v in evals if s == 0]
    last = [v for _r, w, s, v in evals if s == CFG["steps"]]
    assert min(last) < 0.5 * min(first)  # it learns the text (loss from ~ln 16)


@pytest.mark.slow
def test_stop_and_resume_gives_the_uninterrupted_decisions(uninterrupted, tmp_path):
    checks.assert_resume_is_exact(tmp_path / "s", CFG, factory(), SPACE, uninterrupted, 2)


def test_a_copy_continues_from_the_copied_optimizer_with_its_own_hyperparameters():
    make = factory()
    a, b = make(1), make(2)
    a.train({"learning_rate": 1e-2}, 5)
    b.train({"learning_rate": 1e-3}, 2)
    b.load_state_dict(clone_state(a.state_dict()))
    b.reseed(5)
    assert b.evaluate() == a.evaluate() and b.step == 5 and b.position == 0
    exp_avg = {k: v["exp_avg"].clone() for k, v in b.opt.state_dict()["state"].items()}
    assert all(torch.count_nonzero(v) for v in exp_avg.values())  # a's AdamW moments
    b.train({"learning_rate": 2e-3, "weight_decay": 0.05}, 1)
    assert b.opt.param_groups[0]["lr"] == 2e-3 * 6 / 11  # the new rate, in step 6's warmup
    assert b.opt.param_groups[0]["weight_decay"] == 0.05
    assert b.opt.param_groups[1]["weight_decay"] == 0.0  # biases and norms: none
    assert b.step == 6


def test_the_data_position_makes_batches_repeat_exactly():
    make = factory()
    a, b = make(3), make(3)
    a.train({"learning_rate": 1e-2}, 6)
    b.train({"learning_rate": 1e-2}, 2)
    b.load_state_dict(clone_state(b.state_dict()))  # through a checkpoint, mid-way
    b.train({"learning_rate": 1e-2}, 4)
    assert all(torch.equal(x, y) for x, y in zip(a.model.parameters(), b.model.parameters(),
                                                 strict=True))


def test_warmup_and_linear_schedule():
    s = TrainingSettings(warmup_steps=4, lr_scheduler_type="linear", total_steps=12)
    assert [round(s.lr_factor(t), 3) for t in (0, 3, 4, 8, 12)] == [0.2, 0.8, 1.0, 0.5, 0.0]
    with pytest.raises(ConfigError, match="total_steps"):
        TrainingSettings(lr_scheduler_type="linear")
    with pytest.raises(ConfigError, match="lr_scheduler_type"):
        TrainingSettings(lr_scheduler_type="cosine-ish")
    with pytest.raises(ConfigError, match="PreTrainedModel"):
        HuggingFaceTrainable(torch.nn.Linear(2, 2), TRAIN, EVAL, 0)


def test_a_name_the_adapter_does_not_apply_is_refused_before_any_step():
    # "lr" is no setting of TrainingSettings it applies
    t = factory()(0)
    with pytest.raises(ConfigError, match=r"hyperparameter must be one of learning_rate, "
                       r"weight_decay, warmup_steps, max_grad_norm .* got 'lr'"):
        t.train({"lr": 1e-3, "learning_rate": 1e-3}, 1)
    assert t.step == 0 and t.position == 0


HF_MODULE = textwrap.dedent("""
    import transformers
    from firepbt import LogUniform, Space
    from firepbt.integrations.huggingface import TrainingSettings, huggingface_factory

    def gpt2():
        return transformers.GPT2LMHeadModel(transformers.GPT2Config(
            vocab_size=8, n_positions=6, n_embd=8, n_layer=1, n_head=2))

    data = [{"input_ids": [i % 8, 1, 2, 3, 4, 5]} for i in range(16)]
    make = huggingface_factory(gpt2, data, data, settings=TrainingSettings())
    SPACE = Space({"lr": LogUniform(1e-4, 1e-2)})
""")


@pytest.mark.slow
def test_a_misnamed_hyperparameter_is_one_line_through_the_cli(tmp_path, monkeypatch, capsys):
    result = checks.cli_run(tmp_path, monkeypatch, capsys, HF_MODULE, "make")
    checks.assert_refused_in_one_line(tmp_path, result, "hyperparameter must be one of "
                                      "learning_rate, weight_decay", "got 'lr'")


@pytest.mark.slow
def test_the_shipped_example_repeats_run_to_run_and_resumes_exactly(tmp_path):
    # its GPT-2 keeps dropout 0.1: two runs, and a stopped and resumed one,
    # give the same evaluations and decisions
    ex = checks.load_example("huggingface_model.py")
    assert ex.model().config.resid_pdrop == 0.1
    cfg = dict(task="gpt2-text", method="pbt", workers=4, steps=20, ready_interval=10,
               eval_interval=5, seed=2, executor="local")
    first = checks.uninterrupted(tmp_path / "a", cfg, ex.factory, ex.SPACE)
    assert checks.uninterrupted(tmp_path / "b", cfg, ex.factory, ex.SPACE) == first
    run(ExperimentConfig(**cfg), tmp_path / "c", factory=ex.factory, space=ex.SPACE,
        progress=False, max_rounds=1)
    resume(tmp_path / "c", factory=ex.factory, space=ex.SPACE, progress=False)
    assert checks.records(tmp_path / "c") == first


def test_the_configs_loss_type_is_the_models():
    # transformers 5 takes a model's loss type from its class name only ("GPT2LMHeadModel"
    # names none: a warning at every first forward); the config's loss_type is the user's word
    assert factory()(0).model.loss_type == "ForCausalLM"
