// The direct route's call in C++ (dc_kernels/cpu/native.py builds it against PyTorch's headers):
// the checks of `DirectRoute.__call__` (dc_kernels/cpu/batches.py), the output tensor and the call
// of a form's C entry point, without the Python steps between them. A 384 x 384 layer's kernel
// takes about 5 us at batch 1; the Python route around it took about 2.3 us, this one a few
// tenths.
//
// linear(entry, descriptor, in_features, out_features, max_batch, quick_batch, x, bias) returns
// y = x W^T + bias, or None where the Python route must decide: x not a plain float32 contiguous
// CPU tensor of in_features columns, a bias that is not float32, contiguous and in host memory,
// an empty batch, a batch beyond max_batch (decode + GEMM), or an entry point that ran out of
// memory (the Python route calls it again and raises). Batches of up to quick_batch rows keep the
// GIL through the call (a few microseconds of kernel), larger ones release it.
#include <Python.h>

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/csrc/autograd/python_variable.h>

#include <cstdint>

namespace {

// int entry(const layer *, int64_t batch, const float *x, const float *bias, float *y, int threads)
using LinearEntry = int (*)(const void *, int64_t, const float *, const float *, float *, int);

bool host_float32(const at::Tensor &t) {
  return t.scalar_type() == at::kFloat && t.device().is_cpu() && t.is_contiguous();
}

PyObject *linear(PyObject *, PyObject *const *args, Py_ssize_t nargs) {
  if (nargs != 8) {
    PyErr_Format(PyExc_TypeError, "linear takes 8 arguments, got %zd", nargs);
    return nullptr;
  }
  const auto entry = reinterpret_cast<LinearEntry>(PyLong_AsVoidPtr(args[0]));
  const void *descriptor = PyLong_AsVoidPtr(args[1]);
  const int64_t in_features = PyLong_AsLongLong(args[2]);
  const int64_t out_features = PyLong_AsLongLong(args[3]);
  const int64_t max_batch = PyLong_AsLongLong(args[4]);
  const int64_t quick_batch = PyLong_AsLongLong(args[5]);
  if (PyErr_Occurred()) return nullptr;
  if (entry == nullptr || descriptor == nullptr || in_features <= 0 || out_features <= 0) {
    PyErr_SetString(PyExc_ValueError, "linear needs an entry point, a descriptor and positive sizes");
    return nullptr;
  }
  if (!THPVariable_CheckExact(args[6])) Py_RETURN_NONE;
  const at::Tensor &x = THPVariable_Unpack(args[6]);
  if (!host_float32(x) || x.dim() == 0 || x.size(-1) != in_features) Py_RETURN_NONE;
  const float *bias = nullptr;
  if (args[7] != Py_None) {
    if (!THPVariable_CheckExact(args[7])) Py_RETURN_NONE;
    const at::Tensor &b = THPVariable_Unpack(args[7]);
    if (!host_float32(b)) Py_RETURN_NONE;
    bias = b.data_ptr<float>();
  }
  const int64_t batch = x.numel() / in_features;
  if (batch == 0 || batch > max_batch) Py_RETURN_NONE;
  std::vector<int64_t> sizes(x.sizes().begin(), x.sizes().end());
  sizes.back() = out_features;
  at::Tensor y = at::empty(sizes, at::TensorOptions().dtype(at::kFloat));
  const float *xp = x.data_ptr<float>();
  float *yp = y.data_ptr<float>();
  const int threads = at::get_num_threads();
  int status;
  if (batch <= quick_batch) {
    status = entry(descriptor, batch, xp, bias, yp, threads);
  } else {
    Py_BEGIN_ALLOW_THREADS status = entry(descriptor, batch, xp, bias, yp, threads);
    Py_END_ALLOW_THREADS
  }
  if (status != 0) Py_RETURN_NONE;
  return THPVariable_Wrap(std::move(y));
}

PyMethodDef methods[] = {
    {"linear", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(linear)), METH_FASTCALL,
     "y = x W^T + bias through a form's C entry point, or None (see native_route.cpp)"},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "_dc_native_route", nullptr, -1, methods};

}  // namespace

PyMODINIT_FUNC PyInit__dc_native_route() { return PyModule_Create(&module); }
