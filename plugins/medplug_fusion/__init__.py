"""Fusion plugin: one prediction from image and report embeddings plus clinical fields.

Embeddings come from other plugins through the contract (``embed``), looked up
by name in the registry; this package never imports their modules.
"""

MODALITIES = ("image", "report", "clinical")
