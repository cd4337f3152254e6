"""Pipelines: recipes, the training engine, evaluation, fine-tuning, publishing and the ``zoo`` CLI.

Modalities are found through the registry (``zoo.get_modality``), never imported directly.
"""
