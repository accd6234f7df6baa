// The direct route in C++ (dc_kernels/cpu/native.py builds it against PyTorch's headers): what
// `CompressedLinear.forward` and `DirectRoute.__call__` (dc_kernels/cpu/batches.py) do in Python
// for a call that runs a form's kernel, without the Python steps between them. A 384 x 384
// layer's kernel takes about 5 us at batch 1; the Python guard and route around it about 3.8 us.
//
// linear(entry, descriptor, in_features, out_features, max_batch, quick_batch, x, bias) returns
// y = x W^T + bias, or None where the Python route must decide: x not a plain float32 contiguous
// CPU tensor of in_features columns, a bias that is not float32, contiguous and in host memory,
// an empty batch, a batch beyond max_batch (decode + GEMM), or an entry point that ran out of
// memory (the Python route calls it again and raises). Batches of up to quick_batch rows keep the
// GIL through the call (a few microseconds of kernel), larger ones release it.
//
// guarded_linear(entry, ..., quick_batch, watched, x, bias, buffers) first checks what forward
// checks (`dc_kernels.ops.direct_call` and the layer's buffers against `watched`, its (name,
// tensor, version) triples), and returns None unless the call needs nothing of the op: x exactly
// a torch.Tensor over a plain dense tensor (no functorch wrapper), no gradient to record, no jit
// tracing, no torch function or dispatch mode, every buffer the same tensor at the same version.
#include <Python.h>

#include <ATen/Parallel.h>
#include <ATen/PythonTorchFunctionTLS.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/core/GradMode.h>
#include <c10/core/impl/TorchDispatchModeTLS.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/jit/frontend/tracer.h>

#include <cstdint>
#include <typeinfo>

namespace {

// int entry(const layer *, int64_t batch, const float *x, const float *bias, float *y, int threads)
using LinearEntry = int (*)(const void *, int64_t, const float *, const float *, float *, int);

// A plain strided tensor (no sparse, opaque, nested or functorch impl, whose strides or data
// pointer throw), float32, contiguous, in host memory.
bool host_float32(const at::Tensor &t) {
  return typeid(*t.unsafeGetTensorImpl()) == typeid(c10::TensorImpl) && t.layout() == c10::kStrided &&
         t.scalar_type() == at::kFloat && t.device().is_cpu() && t.is_contiguous();
}

struct Layer {
  LinearEntry entry;
  const void *descriptor;
  int64_t in_features, out_features, max_batch, quick_batch;
};

// The first six of `expected` arguments; false with a Python error set when they are wrong.
bool parse_layer(const char *name, PyObject *const *args, Py_ssize_t nargs, Py_ssize_t expected,
                 Layer *layer) {
  if (nargs != expected) {
    PyErr_Format(PyExc_TypeError, "%s takes %zd arguments, got %zd", name, expected, nargs);
    return false;
  }
  layer->entry = reinterpret_cast<LinearEntry>(PyLong_AsVoidPtr(args[0]));
  layer->descriptor = PyLong_AsVoidPtr(args[1]);
  layer->in_features = PyLong_AsLongLong(args[2]);
  layer->out_features = PyLong_AsLongLong(args[3]);
  layer->max_batch = PyLong_AsLongLong(args[4]);
  layer->quick_batch = PyLong_AsLongLong(args[5]);
  if (PyErr_Occurred()) return false;
  if (layer->entry == nullptr || layer->descriptor == nullptr || layer->in_features <= 0 ||
      layer->out_features <= 0) {
    PyErr_SetString(PyExc_ValueError, "linear needs an entry point, a descriptor and positive sizes");
    return false;
  }
  return true;
}

// y = x W^T + bias through the layer's entry point, or None (see the top of this file).
PyObject *run(const Layer &layer, PyObject *x_obj, PyObject *bias_obj) {
  if (!THPVariable_CheckExact(x_obj)) Py_RETURN_NONE;
  const at::Tensor &x = THPVariable_Unpack(x_obj);
  if (!host_float32(x) || x.dim() == 0 || x.size(-1) != layer.in_features) Py_RETURN_NONE;
  const float *bias = nullptr;
  if (bias_obj != Py_None) {
    if (!THPVariable_CheckExact(bias_obj)) Py_RETURN_NONE;
    const at::Tensor &b = THPVariable_Unpack(bias_obj);
    if (!host_float32(b)) Py_RETURN_NONE;
    bias = b.data_ptr<float>();
  }
  const int64_t batch = x.numel() / layer.in_features;
  if (batch == 0 || batch > layer.max_batch) Py_RETURN_NONE;
  std::vector<int64_t> sizes(x.sizes().begin(), x.sizes().end());
  sizes.back() = layer.out_features;
  at::Tensor y = at::empty(sizes, at::TensorOptions().dtype(at::kFloat));
  const float *xp = x.data_ptr<float>();
  float *yp = y.data_ptr<float>();
  const int threads = at::get_num_threads();
  int status;
  if (batch <= layer.quick_batch) {
    status = layer.entry(layer.descriptor, batch, xp, bias, yp, threads);
  } else {
    Py_BEGIN_ALLOW_THREADS status = layer.entry(layer.descriptor, batch, xp, bias, yp, threads);
    Py_END_ALLOW_THREADS
  }
  if (status != 0) Py_RETURN_NONE;
  return THPVariable_Wrap(std::move(y));
}

PyObject *linear(PyObject *, PyObject *const *args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  Layer layer;
  if (!parse_layer("linear", args, nargs, 8, &layer)) return nullptr;
  return run(layer, args[6], args[7]);
  END_HANDLE_TH_ERRORS
}

// Whether the call needs nothing of the op (dc_kernels.ops.direct_call): -1 with an error set.
int plain_call(PyObject *x_obj, PyObject *bias_obj) {
  if (Py_TYPE(x_obj) != reinterpret_cast<PyTypeObject *>(THPVariableClass)) return 0;
  const at::Tensor &x = THPVariable_Unpack(x_obj);
  if (typeid(*x.unsafeGetTensorImpl()) != typeid(c10::TensorImpl)) return 0;  // functorch, sparse, ...
  if (c10::GradMode::is_enabled()) {
    if (x.requires_grad()) return 0;
    if (bias_obj != Py_None && THPVariable_Check(bias_obj) && THPVariable_Unpack(bias_obj).requires_grad())
      return 0;
  }
  if (torch::jit::tracer::isTracing() || at::impl::torch_function_mode_enabled() ||
      c10::impl::TorchDispatchModeTLS::stack_len() > 0)
    return 0;
  return 1;
}

// Whether every (name, tensor, version) of `watched` is still that buffer at that version
// (dc_kernels.linear._unchanged): -1 with an error set.
int unchanged(PyObject *buffers, PyObject *watched) {
  if (!PyDict_Check(buffers) || !PyTuple_Check(watched)) {
    PyErr_SetString(PyExc_TypeError, "guarded_linear needs the buffers' dict and a tuple of triples");
    return -1;
  }
  for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(watched); ++i) {
    PyObject *triple = PyTuple_GET_ITEM(watched, i);
    if (!PyTuple_Check(triple) || PyTuple_GET_SIZE(triple) != 3) {
      PyErr_SetString(PyExc_TypeError, "guarded_linear: each watched buffer is (name, tensor, version)");
      return -1;
    }
    PyObject *tensor = PyTuple_GET_ITEM(triple, 1);
    PyObject *now = PyDict_GetItemWithError(buffers, PyTuple_GET_ITEM(triple, 0));
    if (now == nullptr && PyErr_Occurred()) return -1;
    if ((now == nullptr ? Py_None : now) != tensor) return 0;
    if (tensor == Py_None) continue;
    if (!THPVariable_Check(tensor)) return 0;
    const long long version = PyLong_AsLongLong(PyTuple_GET_ITEM(triple, 2));
    if (version == -1 && PyErr_Occurred()) return -1;
    if (static_cast<long long>(THPVariable_Unpack(tensor)._version()) != version) return 0;
  }
  return 1;
}

PyObject *guarded_linear(PyObject *, PyObject *const *args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  Layer layer;
  if (!parse_layer("guarded_linear", args, nargs, 10, &layer)) return nullptr;
  const int plain = plain_call(args[7], args[8]);
  if (plain != 1) {
    if (plain < 0) return nullptr;
    Py_RETURN_NONE;
  }
  const int same = unchanged(args[9], args[6]);
  if (same != 1) {
    if (same < 0) return nullptr;
    Py_RETURN_NONE;
  }
  return run(layer, args[7], args[8]);
  END_HANDLE_TH_ERRORS
}

PyMethodDef methods[] = {
    {"linear", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(linear)), METH_FASTCALL,
     "y = x W^T + bias through a form's C entry point, or None (see native_route.cpp)"},
    {"guarded_linear", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(guarded_linear)),
     METH_FASTCALL, "linear after forward's checks, or None (see native_route.cpp)"},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "_dc_native_route", nullptr, -1, methods};

}  // namespace

PyMODINIT_FUNC PyInit__dc_native_route() { return PyModule_Create(&module); }
