import os

# Triton kernels run on the CPU through Triton's NumPy interpreter; it must be chosen before
# any kernel is defined, so it is set before the test modules import the library.
os.environ.setdefault("TRITON_INTERPRET", "1")
# Tests never download: Hugging Face models are built from configs in the tests themselves.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
