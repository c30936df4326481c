"""The clinical diagnosis environment: a Parquet dataset of VQA samples -> chat prompts -> reward.

Purpose: everything the clinical GRPO pipeline (``platform/clinical/``) needs to know about the
data, kept free of torch and Ray so it is testable on its own.

- ``dataset``: the Parquet schema, validation (errors name the row and column), the
  intersectional group key (sex x age band, as in FairGRPO, arXiv 2510.19893), image loading.
- ``synth``: the built-in synthetic dataset (several sources and modalities, controllable group
  imbalance, group-dependent difficulty, missing demographics).
- ``convert``: converters from public datasets' metadata layouts (CheXpert, HAM10000, ISIC-2020,
  PAD-UFES-20, VinDr-Mammo) into the schema.
- ``prompts``: chat messages with lettered options.
- ``rewards``: the ``REWARDS`` registry (accuracy, format, accuracy+format, faro).

Nothing here is imported by ``import envs``.
"""
