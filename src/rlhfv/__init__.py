"""rlhfv: make vision-language models trustworthy the RLHF-V way.

collect fine-grained corrections (``rlhfv.annotate``), turn them into dense preference
data (``rlhfv.data``), train with Dense DPO (``rlhfv.ddpo``), measure hallucination
(``rlhfv.eval``), and see the whole loop on a CPU (``rlhfv.scenes``).
"""

__version__ = "0.1.0"
