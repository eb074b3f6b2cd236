"""Training code you already have, under firepbt: each module adapts one library's way of
writing a training loop to firepbt's trainable contract (:mod:`firepbt.trainable`). None is
imported by ``import firepbt``; each needs its library (an optional extra).

- :mod:`firepbt.integrations.tune`: an unchanged ``ray.tune.Trainable`` subclass
  (``pip install 'firepbt[tune]'``);
- :mod:`firepbt.integrations.lightning`: a LightningModule and its DataModule, trained by
  Lightning's ``Trainer`` (``pip install 'firepbt[lightning]'``);
- :mod:`firepbt.integrations.huggingface`: a ``transformers`` model with AdamW and the
  ``TrainingArguments`` a loop needs (``pip install 'firepbt[huggingface]'``).
"""
