import os

# Triton kernels run on the CPU through Triton's NumPy interpreter; it must be chosen before
# any kernel is defined, so it is set before the test modules import the library.
os.environ.setdefault("TRITON_INTERPRET", "1")
