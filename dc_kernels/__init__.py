"""Online: compressed FC layers at inference time (Triton kernels, reference path, modules).

Importing this package never initializes CUDA and never compiles a kernel.
"""
