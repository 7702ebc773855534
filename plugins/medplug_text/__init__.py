"""medplug's report plugin: a Hugging Face sequence classifier over radiology reports.

Offline by default: a compact BERT with a WordPiece tokenizer trained on the
training reports (optionally MLM domain-pretrained), or any local HF checkpoint
folder given as a backbone. Model folders are ordinary ``save_pretrained``
folders plus medplug's ``medplug.json``.
"""

PLUGIN_NAME = "report-classifier"
__version__ = "0.1.0"
