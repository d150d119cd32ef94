// _pimtrain: the Python bindings. Thin by design: every number comes from the C++ library
// (config resolution and validation, macros, the staged products of a weighted layer, training
// sessions, the cost model); this file converts between Python objects and the library's types,
// checks array shapes before they reach the library's invariants, releases the GIL around long
// calls, and maps the library's errors onto Python exceptions.
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <chrono>
#include <cmath>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "pimtrain/base/action_counts.h"
#include "pimtrain/base/config.h"
#include "pimtrain/base/error.h"
#include "pimtrain/base/io.h"
#include "pimtrain/base/parallel.h"
#include "pimtrain/base/registry.h"
#include "pimtrain/base/schema.h"
#include "pimtrain/cost/cost_model.h"
#include "pimtrain/cost/report.h"
#include "pimtrain/cost/tech.h"
#include "pimtrain/kernels/im2col.h"
#include "pimtrain/macro/macro.h"
#include "pimtrain/nn/dataset.h"
#include "pimtrain/nn/staged_matmul.h"
#include "pimtrain/sim/figures.h"
#include "pimtrain/sim/session.h"
#include "pimtrain/train/numeric_guard.h"

namespace py = pybind11;

namespace pim {
namespace {

using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

// The library's kernels share one process-wide thread pool whose loops are not reentrant.
// Every call that may use it holds this lock (taken after the GIL is released, so a thread
// waiting for it never blocks Python). Recursive: a training callback may call back in.
std::recursive_mutex& PoolMutex() {
  static std::recursive_mutex mu;
  return mu;
}

// ---- exceptions ---------------------------------------------------------------------------

struct PyErrors {
  PyObject* error = nullptr;
  PyObject* config = nullptr;
  PyObject* io = nullptr;
  PyObject* data = nullptr;
  PyObject* unsupported = nullptr;
  PyObject* numeric = nullptr;
};
PyErrors& Errors() {
  static PyErrors e;
  return e;
}

PyObject* NewError(py::module_& m, const char* name, const char* doc, py::tuple bases) {
  std::string full = std::string("pimtrain.") + name;
  PyObject* cls = PyErr_NewExceptionWithDoc(full.c_str(), doc, bases.ptr(), nullptr);
  if (cls == nullptr) throw py::error_already_set();
  m.add_object(name, py::handle(cls));
  return cls;
}

void RegisterErrors(py::module_& m) {
  PyErrors& e = Errors();
  py::object exc = py::reinterpret_borrow<py::object>(PyExc_Exception);
  e.error = NewError(m, "Error", "A mistake in pimtrain's input (config, file, data).",
                     py::make_tuple(exc));
  py::object base = py::reinterpret_borrow<py::object>(e.error);
  py::object value = py::reinterpret_borrow<py::object>(PyExc_ValueError);
  e.config = NewError(m, "ConfigError",
                      "A config key is unknown, has the wrong type, or is out of range.",
                      py::make_tuple(base, value));
  e.io = NewError(m, "IoError", "A file cannot be read or written.",
                  py::make_tuple(base, py::reinterpret_borrow<py::object>(PyExc_OSError)));
  e.data = NewError(m, "DataError", "A file's contents are malformed.",
                    py::make_tuple(base, value));
  e.unsupported = NewError(m, "UnsupportedError", "A well-formed request pimtrain does not support.",
                           py::make_tuple(base, value));
  e.numeric = NewError(m, "NumericError", "Training met NaN or Inf and stopped.",
                       py::make_tuple(base, py::reinterpret_borrow<py::object>(PyExc_ArithmeticError)));
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const ConfigError& x) {
      PyErr_SetString(Errors().config, x.what());
    } catch (const IoError& x) {
      PyErr_SetString(Errors().io, x.what());
    } catch (const DataError& x) {
      PyErr_SetString(Errors().data, x.what());
    } catch (const UnsupportedError& x) {
      PyErr_SetString(Errors().unsupported, x.what());
    } catch (const NumericError& x) {
      PyErr_SetString(Errors().numeric, x.what());
    } catch (const Error& x) {
      PyErr_SetString(Errors().error, x.what());
    }
  });
}

// ---- configs ------------------------------------------------------------------------------

py::object JsonLoads(const std::string& text) {
  return py::module_::import("json").attr("loads")(text);
}

// A Python value as a config tree, the way YAML text would parse: scalars stay text and are
// typed by the schema.
ConfigNode FromPython(py::handle o, const std::string& where) {
  if (o.is_none()) return ConfigNode();
  if (py::isinstance<py::dict>(o)) {
    ConfigNode n = ConfigNode::Map();
    for (auto item : py::reinterpret_borrow<py::dict>(o)) {
      if (!py::isinstance<py::str>(item.first)) {
        throw ConfigError(where + ": keys must be strings, got " +
                          std::string(py::str(py::type::of(item.first).attr("__name__"))));
      }
      std::string key = py::cast<std::string>(item.first);
      n.Set(key, FromPython(item.second, where.empty() ? key : where + "." + key));
    }
    return n;
  }
  if (py::isinstance<py::list>(o) || py::isinstance<py::tuple>(o)) {
    ConfigNode n = ConfigNode::List();
    size_t i = 0;
    for (auto item : py::reinterpret_borrow<py::sequence>(o)) {
      n.Append(FromPython(item, where + "[" + std::to_string(i++) + "]"));
    }
    return n;
  }
  if (py::isinstance<py::bool_>(o)) return ConfigNode::Scalar(o.cast<bool>() ? "true" : "false");
  if (py::isinstance<py::int_>(o) || py::isinstance<py::float_>(o)) {
    return ConfigNode::Scalar(py::cast<std::string>(py::repr(o)));  // repr round-trips floats
  }
  if (py::isinstance<py::str>(o)) return ConfigNode::Scalar(py::cast<std::string>(o));
  py::object os = py::module_::import("os");
  if (py::isinstance(o, os.attr("PathLike"))) {
    return ConfigNode::Scalar(py::cast<std::string>(os.attr("fspath")(o)));
  }
  if (py::hasattr(o, "item") && py::hasattr(o, "dtype")) {  // a NumPy scalar
    return FromPython(o.attr("item")(), where);
  }
  throw ConfigError((where.empty() ? std::string("config") : where) +
                    ": cannot use a Python " +
                    std::string(py::str(py::type::of(o).attr("__name__"))) + " in a config");
}

// A validated config (what ResolveConfig returns).
struct ConfigHandle {
  ConfigNode node;
};

// One source of a config: a dict, a YAML file, a preset name or a Config.
ConfigNode SourceNode(py::handle src) {
  if (py::isinstance<ConfigHandle>(src)) return src.cast<const ConfigHandle&>().node;
  if (py::isinstance<py::dict>(src)) {
    ConfigNode n = FromPython(src, "");
    n.SetOriginIfEmpty("<dict>");
    return n;
  }
  py::object os = py::module_::import("os");
  if (py::isinstance<py::str>(src) || py::isinstance(src, os.attr("PathLike"))) {
    return LoadYamlFile(ResolvePresetOrFile(py::cast<std::string>(os.attr("fspath")(src))));
  }
  throw ConfigError("a config source must be a dict, a YAML file, a preset name or a "
                    "pimtrain.Config, got a " +
                    std::string(py::str(py::type::of(src).attr("__name__"))));
}

// Merges the sources in order, applies the "key=value" sets, validates (ResolveConfig's steps).
ConfigHandle Resolve(const py::args& sources, const std::vector<std::string>& sets) {
  ConfigNode merged = ConfigNode::Map();
  for (auto src : sources) MergeInto(merged, SourceNode(src));
  for (const auto& s : sets) ApplySet(merged, s, &RootSchema());
  return {ValidateRoot(merged)};
}

// A config-like argument (Config, dict, file or preset name) as a validated root config.
ConfigNode AsRoot(py::handle o) {
  if (py::isinstance<ConfigHandle>(o)) return o.cast<const ConfigHandle&>().node;
  py::tuple t = py::make_tuple(o);
  return Resolve(py::args(t), {}).node;
}

// A component block ({impl: NAME, ...}, or a name) of `role`, validated. A full config (a
// pimtrain.Config, or a preset name or file) gives its own block at `key_in_root`.
ConfigNode ComponentNode(py::handle o, const std::string& role, const std::string& key_in_root) {
  ConfigNode block;
  // A dict with `impl` or a registered name is the block itself; anything else is a config.
  bool root_like = true;
  if (py::isinstance<py::dict>(o)) {
    root_like = !py::reinterpret_borrow<py::dict>(o).contains("impl");
  } else if (py::isinstance<py::str>(o)) {
    root_like = RegistryIndex::Find(role, py::cast<std::string>(o)) == nullptr;
  }
  if (root_like) {
    ConfigNode root = AsRoot(o);
    const ConfigNode* n = &root;
    size_t start = 0;
    while (start <= key_in_root.size()) {
      size_t dot = key_in_root.find('.', start);
      std::string key = key_in_root.substr(start, dot == std::string::npos ? std::string::npos
                                                                           : dot - start);
      n = n->Find(key);
      if (n == nullptr || n->IsNull()) {
        throw ConfigError("the config has no " + key_in_root + " block");
      }
      if (dot == std::string::npos) break;
      start = dot + 1;
    }
    return *n;
  }
  block = py::isinstance<py::str>(o) ? ConfigNode::Scalar(py::cast<std::string>(o))
                                     : FromPython(o, "");
  block.SetOriginIfEmpty("<dict>");
  block.SetPaths(role);
  return ValidateComponent(block, role);
}

// ---- arrays -------------------------------------------------------------------------------

ConstMatrixView View2d(const FloatArray& a, const char* name) {
  if (a.ndim() != 2) {
    throw py::value_error(std::string(name) + ": expected a 2-D array, got " +
                          std::to_string(a.ndim()) + "-D");
  }
  return ConstMatrixView(a.data(), a.shape(0), a.shape(1), a.shape(1));
}

FloatArray NewMatrix(int64_t rows, int64_t cols) {
  return FloatArray(std::vector<py::ssize_t>{static_cast<py::ssize_t>(rows),
                                             static_cast<py::ssize_t>(cols)});
}

MatrixView MutView(FloatArray& a) {
  return MatrixView{a.mutable_data(), a.shape(0), a.shape(1), a.shape(1)};
}

py::array TensorToNumpy(const Tensor& t) {
  std::vector<py::ssize_t> dims;
  for (int64_t d : t.shape().dims()) dims.push_back(static_cast<py::ssize_t>(d));
  FloatArray out(dims);
  if (t.numel() > 0) std::memcpy(out.mutable_data(), t.data(), sizeof(float) * t.numel());
  return out;
}

py::dict CountsDict(const ActionCounts& c) {
  py::dict d;
  for (const auto& [k, v] : c.counts()) d[py::str(k)] = v;
  return d;
}

py::dict StageCountsDict(const std::array<ActionCounts, kNumStages>& counts) {
  py::dict d;
  for (int s = 0; s < kNumStages; ++s) d[StageName(static_cast<Stage>(s))] = CountsDict(counts[s]);
  return d;
}

Stage ParseStage(const std::string& s) {
  for (int i = 0; i < kNumStages; ++i) {
    if (s == StageName(static_cast<Stage>(i))) return static_cast<Stage>(i);
  }
  throw ConfigError("unknown stage '" + s + "'; stages: forward, backward, gradient, update");
}

py::dict SpecDict(const MacroSpec& s) {
  py::dict d;
  d["rows"] = s.rows;
  d["cols"] = s.cols;
  d["arrays_per_core"] = s.arrays_per_core;
  d["cores"] = s.cores;
  d["input_bits"] = s.input_bits;
  d["weight_bits"] = s.weight_bits;
  d["weight_bits_backward"] = s.weight_bits_backward;
  d["error_bits"] = s.error_bits;
  d["gradient_bits"] = s.gradient_bits;
  d["master_weights"] = s.master_weights;
  return d;
}

// ---- Macro: the role itself on NumPy arrays ----------------------------------------------

class PyMacro {
 public:
  PyMacro(py::handle config, uint64_t seed, int layer)
      : config_(ComponentNode(config, "macro", "pim.macro")), seed_(seed), layer_(layer) {
    macro_ = Registry<Macro>::Create(config_);
  }

  const MacroSpec& spec() const { return macro_->spec(); }
  py::dict config() const { return JsonLoads(ToJson(config_)); }

  void Program(const FloatArray& w, int64_t step) {
    ConstMatrixView v = View2d(w, "weights");
    ActionCounts c;
    {
      py::gil_scoped_release release;
      std::lock_guard<std::recursive_mutex> lock(PoolMutex());
      macro_->Program(v, Context(step, Stage::kUpdate, -1.0f), c);
    }
    counts_[static_cast<int>(Stage::kUpdate)].Merge(c);
    w_rows_ = v.rows;
    w_cols_ = v.cols;
  }

  FloatArray Multiply(const FloatArray& x, bool transposed, int64_t step,
                      std::optional<std::string> stage, float input_max_abs) {
    ConstMatrixView xv = View2d(x, "x");
    RequireProgrammed();
    const int64_t in = transposed ? w_cols_ : w_rows_, out = transposed ? w_rows_ : w_cols_;
    if (xv.cols != in) {
      throw py::value_error("x has " + std::to_string(xv.cols) + " columns; the " +
                            (transposed ? "transposed" : "forward") + " read of a " +
                            std::to_string(w_rows_) + " x " + std::to_string(w_cols_) +
                            " weight matrix takes " + std::to_string(in));
    }
    Stage s = stage ? ParseStage(*stage) : transposed ? Stage::kBackward : Stage::kForward;
    FloatArray y = NewMatrix(xv.rows, out);
    MatrixView yv = MutView(y);
    ActionCounts c;
    {
      py::gil_scoped_release release;
      std::lock_guard<std::recursive_mutex> lock(PoolMutex());
      macro_->Multiply(xv, yv, transposed ? Direction::kTransposed : Direction::kForward,
                       Context(step, s, input_max_abs), c);
    }
    counts_[static_cast<int>(s)].Merge(c);
    return y;
  }

  FloatArray Gradient(const FloatArray& x, const FloatArray& dy, int64_t step) {
    ConstMatrixView xv = View2d(x, "x"), dv = View2d(dy, "dy");
    RequireProgrammed();
    if (xv.cols != w_rows_ || dv.cols != w_cols_ || xv.rows != dv.rows) {
      throw py::value_error("gradient: x must be n x " + std::to_string(w_rows_) +
                            " and dy n x " + std::to_string(w_cols_) + " (same n)");
    }
    FloatArray dw = NewMatrix(w_rows_, w_cols_);
    MatrixView dwv = MutView(dw);
    ActionCounts c;
    {
      py::gil_scoped_release release;
      std::lock_guard<std::recursive_mutex> lock(PoolMutex());
      macro_->GradientCalc(xv, dv, dwv, Context(step, Stage::kGradient, -1.0f), c);
    }
    counts_[static_cast<int>(Stage::kGradient)].Merge(c);
    return dw;
  }

  FloatArray Weights() const {
    RequireProgrammed();
    FloatArray w = NewMatrix(w_rows_, w_cols_);
    macro_->ReadWeights(MutView(w));
    return w;
  }

  // The C++ peer of Multiply for bench/py_overhead.py: the same call `repeats` times in a C++
  // loop (same operands, same counting), seconds per call.
  double TimeMultiply(const FloatArray& x, bool transposed, int repeats) {
    ConstMatrixView xv = View2d(x, "x");
    RequireProgrammed();
    const int64_t out = transposed ? w_rows_ : w_cols_;
    if (xv.cols != (transposed ? w_cols_ : w_rows_)) throw py::value_error("x: wrong width");
    Stage s = transposed ? Stage::kBackward : Stage::kForward;
    FloatArray y = NewMatrix(xv.rows, out);
    MatrixView yv = MutView(y);
    std::vector<ActionCounts> calls(std::max(1, repeats));
    double seconds = 0;
    {
      py::gil_scoped_release release;
      std::lock_guard<std::recursive_mutex> lock(PoolMutex());
      auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < repeats; ++i) {
        ActionCounts& c = calls[i];  // a fresh map per call, as each Multiply above has
        macro_->Multiply(xv, yv, transposed ? Direction::kTransposed : Direction::kForward,
                         Context(0, s, -1.0f), c);
        tally_[static_cast<int>(s)].Merge(c);
      }
      seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    counts_[static_cast<int>(s)].Merge(tally_[static_cast<int>(s)]);
    tally_[static_cast<int>(s)].Clear();
    return seconds / std::max(1, repeats);
  }

  py::dict Counts(std::optional<std::string> stage) const {
    if (stage) return CountsDict(counts_[static_cast<int>(ParseStage(*stage))]);
    ActionCounts all;
    for (const auto& c : counts_) all.Merge(c);
    return CountsDict(all);
  }
  py::dict CountsByStage() const { return StageCountsDict(counts_); }
  void ResetCounts() {
    for (auto& c : counts_) c.Clear();
  }
  HardwareParams Hardware() const { return macro_->HardwareParams(); }
  LayerHardware AsLayerHardware() const {
    LayerHardware h;
    h.layer = layer_;
    h.summary = "macro " + std::to_string(w_rows_) + " x " + std::to_string(w_cols_);
    h.hw = macro_->HardwareParams();
    h.counts = counts_;
    return h;
  }
  std::string Repr() const {
    return "pimtrain.Macro(" + ToJson(config_) + ")";
  }

 private:
  void RequireProgrammed() const {
    if (w_rows_ == 0) throw py::value_error("the macro holds no weights yet: call program(w) first");
  }
  RunContext Context(int64_t step, Stage s, float max_abs) const {
    RunContext rc;
    rc.seed = seed_;
    rc.step = step;
    rc.layer = layer_;
    rc.stage = s;
    rc.pool = &DefaultPool();
    rc.input_max_abs = max_abs;
    return rc;
  }

  ConfigNode config_;
  uint64_t seed_;
  int layer_;
  std::unique_ptr<Macro> macro_;
  int64_t w_rows_ = 0, w_cols_ = 0;
  std::array<ActionCounts, kNumStages> counts_;
  std::array<ActionCounts, kNumStages> tally_;  // TimeMultiply's counts until it holds the GIL
};

// ---- im2col / col2im for PimConv2d (NHWC, the kernels conv2d uses) ------------------------

kernels::ConvGeometry Geometry(int64_t n, int64_t h, int64_t w, int64_t c, int64_t k,
                               int64_t stride, int64_t pad) {
  if (n < 0 || h <= 0 || w <= 0 || c <= 0 || k <= 0 || stride <= 0 || pad < 0 ||
      h + 2 * pad < k || w + 2 * pad < k) {
    throw py::value_error("im2col: kernel " + std::to_string(k) + ", stride " +
                          std::to_string(stride) + ", padding " + std::to_string(pad) +
                          " do not fit a " + std::to_string(h) + "x" + std::to_string(w) +
                          " image");
  }
  kernels::ConvGeometry g;
  g.n = n, g.h = h, g.w = w, g.c = c;
  g.kh = g.kw = k;
  g.stride = stride;
  g.pad = pad;
  return g;
}

// x: (n, h, w, c) -> cols (n * oh * ow, k * k * c), rows ordered (i, j, ch) as conv2d's.
// `out`, when given with that shape, is written instead of a new array (a caller's buffer kept
// across steps: no fresh pages to fault in each call).
FloatArray Im2colArray(const FloatArray& x, int64_t k, int64_t stride, int64_t pad,
                       std::optional<py::array_t<float>> out_buffer) {
  if (x.ndim() != 4) throw py::value_error("im2col: x must be (n, h, w, c)");
  const auto g = Geometry(x.shape(0), x.shape(1), x.shape(2), x.shape(3), k, stride, pad);
  const int64_t rows = g.n * g.rows_per_image(), width = g.col_width();
  FloatArray cols;
  if (out_buffer && out_buffer->ndim() == 2 && out_buffer->shape(0) == rows &&
      out_buffer->shape(1) == width &&
      (out_buffer->flags() & py::array::c_style) != 0 && out_buffer->writeable()) {
    cols = py::reinterpret_borrow<FloatArray>(*out_buffer);
  } else {
    cols = NewMatrix(rows, width);
  }
  float* out = cols.mutable_data();
  {
    py::gil_scoped_release release;
    std::lock_guard<std::recursive_mutex> lock(PoolMutex());
    kernels::Im2col(g, x.data(), out, &DefaultPool());
  }
  return cols;
}

// The adjoint: cols (n * oh * ow, k * k * c) -> dx (n, h, w, c), as conv2d's BP sums it.
FloatArray Col2imArray(const FloatArray& cols, int64_t n, int64_t h, int64_t w, int64_t c,
                       int64_t k, int64_t stride, int64_t pad) {
  const auto g = Geometry(n, h, w, c, k, stride, pad);
  ConstMatrixView v = View2d(cols, "cols");
  if (v.rows != g.n * g.rows_per_image() || v.cols != g.col_width()) {
    throw py::value_error("col2im: cols must be " + std::to_string(g.n * g.rows_per_image()) +
                          " x " + std::to_string(g.col_width()));
  }
  FloatArray dx(std::vector<py::ssize_t>{static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(h),
                                         static_cast<py::ssize_t>(w),
                                         static_cast<py::ssize_t>(c)});
  float* out = dx.mutable_data();
  {
    py::gil_scoped_release release;
    std::lock_guard<std::recursive_mutex> lock(PoolMutex());
    kernels::Col2im(g, v.data, out, &DefaultPool());
  }
  return dx;
}

// ---- MacroLayer: a weighted layer's staged products (StagedMatmul), for pimtrain.torch -----

class PyMacroLayer {
 public:
  PyMacroLayer(py::handle config, int layer, uint64_t seed, int64_t position_rows,
               bool channel_wise)
      : config_(ComponentNode(config, "macro", "pim.macro")), layer_(layer), seed_(seed) {
    mm_.AttachMacro(Registry<Macro>::Create(config_), layer,
                    channel_wise ? ConvMapping::kChannelWise : ConvMapping::kIm2col);
    mm_.SetPositionRows(position_rows);
  }

  // WU: programs w (rows x cols) and returns the weights the layer holds afterwards (what the
  // array holds when the macro keeps no master copy; w itself otherwise).
  FloatArray Program(const FloatArray& w, int64_t step) {
    ConstMatrixView v = View2d(w, "weights");
    if (w_.shape() != Shape{v.rows, v.cols}) w_ = Tensor(Shape{v.rows, v.cols});
    std::memcpy(w_.data(), v.data, sizeof(float) * v.rows * v.cols);
    {
      py::gil_scoped_release release;
      std::lock_guard<std::recursive_mutex> lock(PoolMutex());
      mm_.Commit(w_, Ctx(step));
    }
    programmed_ = true;
    Collect();
    FloatArray out = NewMatrix(v.rows, v.cols);
    std::memcpy(out.mutable_data(), w_.data(), sizeof(float) * v.rows * v.cols);
    return out;
  }

  FloatArray Forward(const FloatArray& x, std::optional<FloatArray> bias, int64_t step) {
    ConstMatrixView xv = View2d(x, "x");
    Require(xv.cols == rows(), "x must have " + std::to_string(rows()) + " columns");
    if (bias) {
      Require(bias->ndim() == 1 && bias->shape(0) == cols(),
              "bias must be a vector of " + std::to_string(cols()));
    }
    FloatArray y = NewMatrix(xv.rows, cols());
    MatrixView yv = MutView(y);
    const float* b = bias ? bias->data() : nullptr;
    {
      py::gil_scoped_release release;
      std::lock_guard<std::recursive_mutex> lock(PoolMutex());
      mm_.Forward(xv, w_, b, yv, -1.0f, Ctx(step), &DefaultPool());
    }
    Collect();
    return y;
  }

  // `out`: an array to write dx into when it has dx's shape (C-contiguous, writable), e.g. the
  // last call's dx once nothing reads it: no fresh pages each step (arrays above glibc's mmap
  // threshold, 32 MB, are mapped and page-faulted anew on every allocation).
  FloatArray Backward(const FloatArray& dy, int64_t step, std::optional<py::array_t<float>> out) {
    ConstMatrixView dv = View2d(dy, "dy");
    Require(dv.cols == cols(), "dy must have " + std::to_string(cols()) + " columns");
    FloatArray dx;
    if (out && out->ndim() == 2 && out->shape(0) == dv.rows && out->shape(1) == rows() &&
        (out->flags() & py::array::c_style) != 0 && out->writeable()) {
      dx = py::reinterpret_borrow<FloatArray>(*out);
    } else {
      dx = NewMatrix(dv.rows, rows());
    }
    MatrixView dxv = MutView(dx);
    {
      py::gil_scoped_release release;
      std::lock_guard<std::recursive_mutex> lock(PoolMutex());
      mm_.Backward(dv, w_, dxv, -1.0f, Ctx(step), &DefaultPool());
    }
    Collect();
    return dx;
  }

  FloatArray Gradient(const FloatArray& x, const FloatArray& dy, int64_t step) {
    ConstMatrixView xv = View2d(x, "x"), dv = View2d(dy, "dy");
    Require(xv.cols == rows() && dv.cols == cols() && xv.rows == dv.rows,
            "gradient: x must be n x " + std::to_string(rows()) + " and dy n x " +
                std::to_string(cols()));
    FloatArray dw = NewMatrix(rows(), cols());
    MatrixView dwv = MutView(dw);
    {
      py::gil_scoped_release release;
      std::lock_guard<std::recursive_mutex> lock(PoolMutex());
      mm_.Gradient(xv, dv, dwv, Ctx(step), &DefaultPool());
    }
    Collect();
    return dw;
  }

  bool master_weights() { return mm_.macro()->spec().master_weights; }
  const MacroSpec& spec() { return mm_.macro()->spec(); }
  py::dict config() const { return JsonLoads(ToJson(config_)); }
  int layer() const { return layer_; }
  void set_summary(std::string s) { summary_ = std::move(s); }
  py::dict CountsByStage() const { return StageCountsDict(counts_); }
  void ResetCounts() {
    for (auto& c : counts_) c.Clear();
    sparsity_ = SparsityStats{};
  }
  py::dict Sparsity() {
    SparsityStats s = mm_.TakeSparsity();
    sparsity_.input_elements += s.input_elements;
    sparsity_.input_zeros += s.input_zeros;
    sparsity_.error_elements += s.error_elements;
    sparsity_.error_zeros += s.error_zeros;
    auto frac = [](int64_t z, int64_t n) { return n > 0 ? static_cast<double>(z) / n : 0.0; };
    py::dict d;
    d["input_zero_fraction"] = frac(sparsity_.input_zeros, sparsity_.input_elements);
    d["error_zero_fraction"] = frac(sparsity_.error_zeros, sparsity_.error_elements);
    d["weight_zero_fraction"] = frac(s.weight_zeros, s.weight_elements);
    d["array_utilization"] = mm_.occupancy().utilization();
    return d;
  }
  // The layer's counts and hardware as the trainer reports them to the cost model.
  LayerHardware AsLayerHardware() {
    LayerHardware h;
    h.layer = layer_;
    h.summary = summary_;
    h.hw = mm_.macro()->HardwareParams();
    // Weight-stationary, as Trainer::TakeHardwareJson: the layer runs on the arrays it occupies.
    if (double cells = CellsPerArray(h.hw); cells > 0 && mm_.occupancy().cells_allocated > 0) {
      h.hw["arrays_used"] = std::ceil(static_cast<double>(mm_.occupancy().cells_allocated) / cells);
    }
    h.counts = counts_;
    return h;
  }

 private:
  int64_t rows() const { return w_.shape().rank() == 2 ? w_.shape()[0] : 0; }
  int64_t cols() const { return w_.shape().rank() == 2 ? w_.shape()[1] : 0; }
  void Require(bool ok, const std::string& msg) const {
    if (!programmed_) throw py::value_error("the layer holds no weights yet: call program(w) first");
    if (!ok) throw py::value_error(msg);
  }
  StepContext Ctx(int64_t step) const {
    StepContext c;
    c.seed = seed_;
    c.step = step;
    c.pool = &DefaultPool();
    return c;
  }
  // Moves the call's counts into the layer's totals (or drops them, and the call's operand
  // statistics, when counting is off: evaluation is not part of a training period's cost).
  void Collect() {
    auto c = mm_.TakeCounts();
    if (!counting_) {
      mm_.TakeSparsity();
      return;
    }
    for (int s = 0; s < kNumStages; ++s) counts_[s].Merge(c[s]);
  }

 public:
  bool counting_ = true;

 private:

  ConfigNode config_;
  int layer_;
  uint64_t seed_;
  StagedMatmul mm_;
  Tensor w_;
  bool programmed_ = false;
  std::string summary_;
  std::array<ActionCounts, kNumStages> counts_;
  SparsityStats sparsity_;
};

// ---- cost ---------------------------------------------------------------------------------

class PyCostModel {
 public:
  explicit PyCostModel(py::handle config)
      : config_(ComponentNode(config, "cost_model", "cost")),
        model_(Registry<CostModel>::Create(config_)) {}

  // Prices the counts of `layers` (Macro or MacroLayer objects) over a period of `samples`
  // training samples in steps of `batch_size` (samples 0: not a training period).
  CostReport Price(const py::list& layers, int64_t samples, int64_t batch_size,
                   std::optional<std::string> point) const {
    std::vector<LayerHardware> hw;
    for (auto l : layers) {
      if (py::isinstance<PyMacroLayer>(l)) {
        hw.push_back(l.cast<PyMacroLayer&>().AsLayerHardware());
      } else if (py::isinstance<PyMacro>(l)) {
        hw.push_back(l.cast<const PyMacro&>().AsLayerHardware());
      } else {
        throw py::type_error("price: layers must be pimtrain.Macro or pimtrain.MacroLayer objects");
      }
    }
    OperatingPoint op = point ? model_->FindOperatingPoint(*point) : model_->operating_point();
    RunShape shape{samples, batch_size, model_->schedule()};
    return BuildCostReport(*model_, hw, op, shape);
  }
  py::dict OperatingPointDict(const OperatingPoint& p) const {
    py::dict d;
    d["name"] = p.name;
    d["voltage"] = p.voltage;
    d["frequency_mhz"] = p.frequency_mhz;
    return d;
  }
  py::dict Point() const { return OperatingPointDict(model_->operating_point()); }
  py::list Points() const {
    py::list l;
    for (const auto& p : model_->operating_points()) l.append(OperatingPointDict(p));
    return l;
  }

 private:
  ConfigNode config_;
  std::unique_ptr<CostModel> model_;
};

// `pimtrain cost PRESET --json` as a dict: the chip filled with a dense workload, priced at each
// operating point, and the preset's published figures against the model.
py::dict ChipCost(py::handle config, std::optional<std::string> point) {
  ConfigNode root = AsRoot(config);
  const ConfigNode* block = root.Find("cost");
  if (block == nullptr || block->IsNull()) {
    throw ConfigError("the config has no cost: block (pimtrain describe cost_model)");
  }
  py::list reports;
  std::string checks;
  {
    py::gil_scoped_release release;
    std::lock_guard<std::recursive_mutex> lock(PoolMutex());
    std::unique_ptr<CostModel> model = Registry<CostModel>::Create(*block);
    std::vector<OperatingPoint> points;
    if (point) {
      points.push_back(model->FindOperatingPoint(*point));
    } else {
      points.push_back(model->operating_point());
      for (const auto& p : model->operating_points()) points.push_back(p);
    }
    Workload dense;
    dense.input_sparsity = 0;
    std::vector<std::string> jsons;
    for (const auto& p : points) jsons.push_back(BenchmarkMacro(root, *model, dense, p).ToJson());
    checks = FigureChecksJson(CheckExpected(root, *model));
    py::gil_scoped_acquire acquire;
    for (const auto& j : jsons) reports.append(JsonLoads(j));
  }
  py::dict d;
  d["preset"] = root.Has("name") ? root.GetString("name") : std::string("");
  d["operating_points"] = reports;
  d["expected"] = JsonLoads(checks);
  return d;
}

// ---- sessions -----------------------------------------------------------------------------

py::dict SummaryDict(const TrainSummary& s) {
  py::dict d;
  py::list epochs;
  for (const auto& m : s.epochs) epochs.append(JsonLoads(m.ToJsonLine()));
  d["epochs"] = epochs;
  d["test_accuracy"] = s.test_accuracy;
  d["train_seconds"] = s.train_seconds;
  d["peak_rss_bytes"] = s.peak_rss_bytes;
  if (s.has_cost) {
    d["cost"] = JsonLoads(s.cost.ToJson());
    d["cost_report"] = py::cast(s.cost);
    d["cost_energy_pj_all_epochs"] = s.cost_energy_pj_all_epochs;
  } else {
    d["cost"] = py::none();
    d["cost_report"] = py::none();
  }
  return d;
}

class PySession {
 public:
  explicit PySession(py::handle config) {
    ConfigNode root = AsRoot(config);
    py::gil_scoped_release release;
    std::lock_guard<std::recursive_mutex> lock(PoolMutex());
    session_ = std::make_unique<Session>(root);
  }

  py::dict Train(std::optional<std::string> out_dir, bool resume, py::object on_epoch,
                 py::object on_progress, py::object on_info) {
    SessionCallbacks cb;
    cb.on_epoch = [on_epoch](const EpochMetrics& m) {
      py::gil_scoped_acquire acquire;
      if (!on_epoch.is_none()) on_epoch(JsonLoads(m.ToJsonLine()));
    };
    // Every step looks at Python's signals, so Ctrl-C stops a run between steps.
    cb.on_progress = [on_progress](int64_t step, int64_t steps, double loss, double acc) {
      py::gil_scoped_acquire acquire;
      if (PyErr_CheckSignals() != 0) throw py::error_already_set();
      if (!on_progress.is_none()) on_progress(step, steps, loss, acc);
    };
    cb.on_info = [on_info](const std::string& msg) {
      py::gil_scoped_acquire acquire;
      if (!on_info.is_none()) on_info(msg);
    };
    TrainSummary s;
    {
      py::gil_scoped_release release;
      std::lock_guard<std::recursive_mutex> lock(PoolMutex());
      s = session_->Train(out_dir.value_or(""), resume, cb);
    }
    return SummaryDict(s);
  }

  py::dict Evaluate() {
    EvalResult r;
    {
      py::gil_scoped_release release;
      std::lock_guard<std::recursive_mutex> lock(PoolMutex());
      r = session_->trainer().Evaluate(session_->data().test);
      session_->trainer().TakeHardwareJson();  // evaluation is not part of the training counts
    }
    py::dict d;
    d["loss"] = r.loss;
    d["accuracy"] = r.accuracy;
    return d;
  }

  py::dict EvaluateCheckpoint(const std::string& path) {
    EvalResult r;
    {
      py::gil_scoped_release release;
      std::lock_guard<std::recursive_mutex> lock(PoolMutex());
      r = session_->EvaluateCheckpoint(path);
      session_->trainer().TakeHardwareJson();
    }
    py::dict d;
    d["loss"] = r.loss;
    d["accuracy"] = r.accuracy;
    return d;
  }

  // The model's tensors (weights, biases, buffers) by checkpoint name, copied.
  py::dict Parameters() {
    py::dict d;
    for (auto& [name, t] : session_->trainer().StateTensors()) {
      if (name.rfind("layers.", 0) == 0) d[py::str(name)] = TensorToNumpy(*t);
    }
    return d;
  }

  py::dict Data() {
    const LoadedData& data = session_->data();
    auto split = [](const Split& s) {
      py::array_t<int32_t> y(static_cast<py::ssize_t>(s.labels.size()));
      if (!s.labels.empty()) {
        std::memcpy(y.mutable_data(), s.labels.data(), sizeof(int32_t) * s.labels.size());
      }
      return py::make_tuple(TensorToNumpy(s.images), y);
    };
    py::dict d;
    d["name"] = data.name;
    d["num_classes"] = data.num_classes;
    d["train"] = split(data.train);
    d["test"] = split(data.test);
    return d;
  }

  ConfigHandle Config() const { return {session_->config()}; }
  std::string Summary() { return session_->network().Summary(); }

 private:
  std::unique_ptr<Session> session_;
};

py::dict Describe(std::optional<std::string> role) {
  py::dict out;
  for (const auto& r : RegistryIndex::Roles()) {
    if (role && *role != r) continue;
    py::dict impls;
    for (const auto* info : RegistryIndex::Implementations(r)) {
      py::list params;
      for (const auto& p : info->schema.params()) {
        py::dict pd;
        pd["name"] = p.name();
        pd["type"] = p.TypeDescription();
        pd["default"] = p.default_text() ? py::object(py::str(*p.default_text())) : py::none();
        pd["optional"] = p.optional();
        pd["unit"] = p.unit();
        pd["doc"] = p.doc();
        params.append(pd);
      }
      py::dict d;
      d["description"] = info->description;
      d["params"] = params;
      impls[py::str(info->name)] = d;
    }
    out[py::str(r)] = impls;
  }
  if (role && out.empty()) {
    throw ConfigError("describe: unknown role '" + *role + "'" +
                      DidYouMean(*role, RegistryIndex::Roles()));
  }
  return out;
}

}  // namespace
}  // namespace pim

PYBIND11_MODULE(_pimtrain, m) {
  using namespace pim;
  m.doc() = "pimtrain's C++ library (bindings; import the pimtrain package instead)";
  RegisterErrors(m);

  py::class_<ConfigHandle>(m, "Config",
                       "A validated config: sources (dicts, YAML files, preset names, Configs) "
                       "merged in order, then `sets` ('key=value', as --set), then checked "
                       "against the schema with defaults filled in.")
      .def(py::init([](const py::args& sources, const std::vector<std::string>& sets) {
             return Resolve(sources, sets);
           }),
           py::arg("sets") = std::vector<std::string>{})
      .def_static(
          "from_yaml",
          [](const std::string& text, const std::string& origin) {
            return ConfigHandle{ValidateRoot(ParseYaml(text, origin))};
          },
          py::arg("text"), py::arg("origin") = "<yaml>", "A config from YAML text.")
      .def(
          "override",
          [](const ConfigHandle& c, const std::vector<std::string>& sets) {
            ConfigNode n = c.node;
            for (const auto& s : sets) ApplySet(n, s, &RootSchema());
            return ConfigHandle{ValidateRoot(n)};
          },
          py::arg("sets"), "A copy with 'key=value' overrides applied (as --set).")
      .def("to_dict", [](const ConfigHandle& c) { return JsonLoads(ToJson(c.node)); })
      .def("to_yaml", [](const ConfigHandle& c) { return ToYaml(c.node); })
      .def("to_json", [](const ConfigHandle& c) { return ToJson(c.node, 2); })
      .def("__getitem__",
           [](const ConfigHandle& c, const std::string& key) {
             const ConfigNode* n = c.node.Find(key);
             if (n == nullptr) throw py::key_error(key);
             return JsonLoads(ToJson(*n));
           })
      .def("__eq__", [](const ConfigHandle& a, const ConfigHandle& b) { return a.node == b.node; })
      .def("__repr__",
           [](const ConfigHandle& c) {
             std::string name = c.node.Has("name") ? c.node.GetString("name") : "";
             return "pimtrain.Config(" + (name.empty() ? std::string("...") : "'" + name + "'") +
                    ")";
           });

  py::class_<PyMacro>(m, "Macro",
                      "A PIM macro (the `macro` role) holding a weight matrix, on NumPy arrays.")
      .def(py::init<py::handle, uint64_t, int>(), py::arg("config"), py::arg("seed") = 0,
           py::arg("layer") = 0)
      .def_property_readonly("spec", [](const PyMacro& p) { return SpecDict(p.spec()); })
      .def_property_readonly("config", &PyMacro::config)
      .def("hardware_params", &PyMacro::Hardware)
      .def("program", &PyMacro::Program, py::arg("w"), py::arg("step") = 0)
      .def("multiply", &PyMacro::Multiply, py::arg("x"), py::arg("transposed") = false,
           py::arg("step") = 0, py::arg("stage") = std::nullopt, py::arg("input_max_abs") = -1.0f)
      .def("gradient", &PyMacro::Gradient, py::arg("x"), py::arg("dy"), py::arg("step") = 0)
      .def("weights", &PyMacro::Weights)
      .def("counts", &PyMacro::Counts, py::arg("stage") = std::nullopt)
      .def("counts_by_stage", &PyMacro::CountsByStage)
      .def("reset_counts", &PyMacro::ResetCounts)
      .def("_time_multiply", &PyMacro::TimeMultiply, py::arg("x"), py::arg("transposed") = false,
           py::arg("repeats") = 100)
      .def("__repr__", &PyMacro::Repr);

  py::class_<PyMacroLayer>(m, "MacroLayer",
                           "The four stages of one weighted layer on a macro (StagedMatmul): "
                           "FP, BP, GC through the macro, WU programs it.")
      .def(py::init<py::handle, int, uint64_t, int64_t, bool>(), py::arg("config"),
           py::arg("layer") = 0, py::arg("seed") = 0, py::arg("position_rows") = 0,
           py::arg("channel_wise") = false)
      .def("program", &PyMacroLayer::Program, py::arg("w"), py::arg("step") = 0)
      .def("forward", &PyMacroLayer::Forward, py::arg("x"), py::arg("bias") = std::nullopt,
           py::arg("step") = 0)
      .def("backward", &PyMacroLayer::Backward, py::arg("dy"), py::arg("step") = 0,
           py::arg("out") = std::nullopt)
      .def("gradient", &PyMacroLayer::Gradient, py::arg("x"), py::arg("dy"), py::arg("step") = 0)
      .def_property_readonly("master_weights", &PyMacroLayer::master_weights)
      .def_property_readonly("spec", [](PyMacroLayer& l) { return SpecDict(l.spec()); })
      .def_property_readonly("config", &PyMacroLayer::config)
      .def_property_readonly("layer", &PyMacroLayer::layer)
      .def("set_summary", &PyMacroLayer::set_summary)
      .def_readwrite("counting", &PyMacroLayer::counting_,
                     "count the calls' actions (off: evaluation passes, not priced)")
      .def("counts_by_stage", &PyMacroLayer::CountsByStage)
      .def("sparsity", &PyMacroLayer::Sparsity)
      .def("reset_counts", &PyMacroLayer::ResetCounts);

  py::class_<CostReport>(m, "CostReport", "A period's counts priced by a cost model.")
      .def("to_dict", [](const CostReport& r) { return JsonLoads(r.ToJson()); })
      .def("headline", &CostReport::Headline)
      .def("table", &CostReport::ToTable)
      .def_readonly("energy_pj", &CostReport::energy_pj)
      .def_readonly("seconds", &CostReport::seconds)
      .def_readonly("tops_per_watt", &CostReport::tops_per_watt)
      .def_readonly("power_mw", &CostReport::power_mw)
      .def_property_readonly("energy_by_stage", &CostReport::EnergyByStage)
      .def_property_readonly("energy_by_component", &CostReport::EnergyByComponent)
      .def_property_readonly("energy_by_layer", &CostReport::EnergyByLayer)
      .def("__repr__", [](const CostReport& r) { return r.Headline(); });

  py::class_<PyCostModel>(m, "CostModel", "A chip's cost model (the `cost:` block).")
      .def(py::init<py::handle>(), py::arg("config"))
      .def("price", &PyCostModel::Price, py::arg("layers"), py::arg("samples") = 0,
           py::arg("batch_size") = 1, py::arg("point") = std::nullopt)
      .def_property_readonly("operating_point", &PyCostModel::Point)
      .def_property_readonly("operating_points", &PyCostModel::Points);

  py::class_<PySession>(m, "Session", "One resolved config: data loaded, model built.")
      .def(py::init<py::handle>(), py::arg("config"))
      .def("train", &PySession::Train, py::arg("out_dir") = std::nullopt,
           py::arg("resume") = false, py::arg("on_epoch") = py::none(),
           py::arg("on_progress") = py::none(), py::arg("on_info") = py::none())
      .def("evaluate", &PySession::Evaluate)
      .def("evaluate_checkpoint", &PySession::EvaluateCheckpoint, py::arg("path"))
      .def("parameters", &PySession::Parameters)
      .def("data", &PySession::Data)
      .def_property_readonly("config", &PySession::Config)
      .def_property_readonly("summary", &PySession::Summary);

  m.def("chip_cost", &ChipCost, py::arg("config"), py::arg("point") = std::nullopt);
  m.def("describe", &Describe, py::arg("role") = std::nullopt);
  m.def(
      "epoch_order",
      [](uint64_t seed, int64_t epoch, int64_t n) {
        std::vector<int64_t> order = EpochOrder(seed, epoch, n);
        py::array_t<int64_t> out(static_cast<py::ssize_t>(order.size()));
        if (!order.empty()) std::memcpy(out.mutable_data(), order.data(), sizeof(int64_t) * order.size());
        return out;
      },
      py::arg("seed"), py::arg("epoch"), py::arg("n"));
  m.def(
      "set_threads",
      [](int n) {
        if (n < 0 || n > 1024) throw ConfigError("threads: expected an integer in [0, 1024]");
        py::gil_scoped_release release;
        std::lock_guard<std::recursive_mutex> lock(PoolMutex());
        SetDefaultThreads(n == 0 ? static_cast<int>(std::max(1u, std::thread::hardware_concurrency())) : n);
      },
      py::arg("n"));
  m.def("threads", [] { return DefaultPool().num_threads(); });
  m.def("_im2col", &Im2colArray, py::arg("x"), py::arg("kernel"), py::arg("stride"),
        py::arg("padding"), py::arg("out") = std::nullopt,
        "NHWC im2col as conv2d's (for pimtrain.torch.PimConv2d)");
  m.def("_col2im", &Col2imArray, py::arg("cols"), py::arg("n"), py::arg("h"), py::arg("w"),
        py::arg("c"), py::arg("kernel"), py::arg("stride"), py::arg("padding"),
        "the adjoint of _im2col, as conv2d's BP (for pimtrain.torch.PimConv2d)");
  m.def("presets_dir", &PresetsDir);
}
