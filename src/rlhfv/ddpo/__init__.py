"""Dense DPO (DDPO) and SFT training for any Hugging Face image-text-to-text model.

* ``loss``: the objective as pure tensor functions (paper Eq. 5, DPO sigmoid/hinge/IPO, SFT term);
* ``config``: ``TrainConfig`` (paper defaults, ``reference`` preset, YAML + overrides);
* ``forward``: the policy forward, per-token log-probs of a stacked batch (plain or shared prefix);
* ``reference``: reference log-probs, precomputed and cached beside the data, or live;
* ``objectives`` / ``sft``: one batch -> (loss, metrics) for DDPO and for SFT;
* ``batches``: image pipelines (trustworthy pad, opt-in random crop), order, sharding;
* ``trainer``: the accelerate loop, ``train_ddpo`` / ``train_sft``;
* ``commands``: ``rlhfv train`` and ``rlhfv sft``.

See docs/training.md.
"""
