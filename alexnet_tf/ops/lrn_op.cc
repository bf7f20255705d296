// Local response normalisation across channels (paper §3.3) in one pass forward and one pass backward.
//
//   d_i = k + alpha * sum_{j=max(0,i-r)}^{min(C-1,i+r)} x_j^2,   y_i = x_i * d_i^-beta   (r = size / 2)
//   dx_j = [start <= j < stop] g_j d_j^-beta - 2 alpha beta x_j sum_{i in [start,stop), |i-j| <= r} g_i y_i / d_i
//
// x is (..., C) with channels last (NHWC); y and g hold the output channels [start, stop) of C
// (the whole C by default), the windows always running over all C input channels: this is how
// alexnet_tf/layers.py's LocalResponseNormalization with `output_channels` normalises one tower's
// channels of both towers' maps (model.lrn_across_towers). `alpha` is the coefficient that multiplies
// the sum (the layer passes alpha / n under the Caffe convention).
//
// Each pixel's channel row is independent: the rows are spread over TensorFlow's intra-op thread
// pool (Shard), and within a row every loop runs over channels with unit stride and no branches, so
// the compiler vectorises it at whatever ISA the build targets. bfloat16 rows are widened to float32
// on load and rounded to nearest-even on store; everything in between is float32, because bfloat16
// (8 significant bits) cannot resolve k + alpha * sum ~ 2.01.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"

namespace {

using tensorflow::bfloat16;
using tensorflow::DEVICE_CPU;
using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using tensorflow::TensorShape;
namespace shape_inference = tensorflow::shape_inference;

template <typename... Args>
absl::Status InvalidArgument(const Args&... args) {
  return absl::InvalidArgumentError(absl::StrCat(args...));
}

#define INLINE inline __attribute__((always_inline))

// ----- rows in and out: float32 as is, bfloat16 through its bits (vectorisable integer ops) -----

INLINE void LoadRow(const float* src, float* dst, int64_t n) { std::memcpy(dst, src, n * sizeof(float)); }

INLINE void LoadRow(const bfloat16* src, float* dst, int64_t n) {
  const uint16_t* bits = reinterpret_cast<const uint16_t*>(src);  // bfloat16 is one uint16_t of bits
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t u = static_cast<uint32_t>(bits[i]) << 16;
    std::memcpy(dst + i, &u, sizeof u);  // the type pun without aliasing: compiles to a move
  }
}

INLINE void StoreRow(const float* src, float* dst, int64_t n) { std::memcpy(dst, src, n * sizeof(float)); }

INLINE void StoreRow(const float* src, bfloat16* dst, int64_t n) {
  uint16_t* bits = reinterpret_cast<uint16_t*>(dst);
  for (int64_t i = 0; i < n; ++i) {
    uint32_t u;
    std::memcpy(&u, src + i, sizeof u);
    const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;  // round to nearest, ties to even
    const bool nan = (u & 0x7fffffffu) > 0x7f800000u;
    bits[i] = nan ? static_cast<uint16_t>((u >> 16) | 0x0040u) : static_cast<uint16_t>(rounded);  // quiet NaN
  }
}

// Rows per block: about 2,048 values, so a block's buffers stay in the L1/L2 cache.
constexpr int64_t kBlockValues = 2048;

struct Params {
  int radius;
  float k, alpha, beta;
  int64_t channels, start, stop;  // C, and the output channels [start, stop)
  int64_t block_rows;
  // masks[o * block_rows * C + q] = 1 when channel q % C + o - radius lies in [0, C): a block's rows are
  // one flat array, so a window sum is 2r+1 long multiply-adds over the block, not a short loop per row.
  std::vector<float> masks;
};

void MakeMasks(Params* p) {
  const int64_t c = p->channels, width = 2 * p->radius + 1;
  p->block_rows = std::max<int64_t>(1, kBlockValues / c);
  const int64_t n = p->block_rows * c;
  p->masks.assign(width * n, 0.0f);
  for (int64_t o = 0; o < width; ++o)
    for (int64_t q = 0; q < n; ++q) {
      const int64_t j = q % c + o - p->radius;
      p->masks[o * n + q] = (j >= 0 && j < c) ? 1.0f : 0.0f;
    }
}

// out[q] = sum_o masks_o[q] * src[q + o - r]: src has r finite guard values on each side.
INLINE void WindowSum(const Params& p, const float* src, int64_t n, float* out) {
  const int64_t stride = p.block_rows * p.channels;
  for (int64_t q = 0; q < n; ++q) out[q] = src[q];  // the centre, always inside
  for (int o = 0; o <= 2 * p.radius; ++o) {
    if (o == p.radius) continue;
    const float* m = p.masks.data() + o * stride;
    const float* s = src + o - p.radius;
    for (int64_t q = 0; q < n; ++q) out[q] += m[q] * s[q];
  }
}

// scale = d^-beta and inverse = 1/d: for the paper's beta = 0.75 as r = 1/sqrt(d), r * sqrt(r) and
// r * r (correctly rounded sqrt and division, vectorised); else through pow. d is overwritten.
INLINE void InversePower(float* d, float* scale, int64_t n, float beta) {
  if (beta == 0.75f) {
    for (int64_t i = 0; i < n; ++i) {
      const float r = 1.0f / std::sqrt(d[i]);
      scale[i] = r * std::sqrt(r);
      d[i] = r * r;
    }
  } else {
    for (int64_t i = 0; i < n; ++i) {
      scale[i] = std::pow(d[i], -beta);
      d[i] = 1.0f / d[i];
    }
  }
}

// One thread's buffers for one block of rows; `padded` has r zeros before and after its values.
struct Scratch {
  explicit Scratch(const Params& p)
      : size(p.block_rows * p.channels), x(size), padded(size + 2 * p.radius, 0.0f), inverse(size), scale(size),
        g(size), out(size) {}
  int64_t size;
  std::vector<float> x, padded, inverse, scale, g, out;
  float* inner() { return padded.data() + (padded.size() - size) / 2; }
};

// A block's input as float32: float32 in place, bfloat16 widened into `buffer`.
INLINE const float* Source(const float* x, float*, int64_t) { return x; }
INLINE const float* Source(const bfloat16* x, float* buffer, int64_t n) {
  LoadRow(x, buffer, n);
  return buffer;
}

// Where a block's n results go: straight into a float32 output of the whole rows, else into `buffer`
// (then Store: bfloat16 rounding, or the output channels' slice of each row).
INLINE float* Target(float* y, float* buffer, bool whole) { return whole ? y : buffer; }
INLINE float* Target(bfloat16*, float* buffer, bool) { return buffer; }

template <typename T>
INLINE void Store(const Params& p, const float* out, T* y, int64_t rows, bool whole) {
  const int64_t c = p.channels, width = p.stop - p.start;
  if (whole) {
    if (out != reinterpret_cast<const float*>(y)) StoreRow(out, y, rows * c);
  } else {
    for (int64_t i = 0; i < rows; ++i) StoreRow(out + i * c + p.start, y + i * width, width);
  }
}

// d^-beta (scale) and 1/d (inverse) of every value of the block's n values x.
INLINE void Normaliser(const Params& p, const float* x, Scratch& s, int64_t n) {
  float* sq = s.inner();
  float* d = s.inverse.data();
  for (int64_t q = 0; q < n; ++q) sq[q] = x[q] * x[q];
  for (int64_t q = n; q < n + p.radius; ++q) sq[q] = 0.0f;  // a short last block: its right guard
  WindowSum(p, sq, n, d);
  for (int64_t q = 0; q < n; ++q) d[q] = p.k + p.alpha * d[q];
  InversePower(d, s.scale.data(), n, p.beta);
}

template <typename T>
INLINE void ForwardRange(const Params& p, const T* x, T* y, int64_t begin, int64_t end) {
  Scratch s(p);
  const int64_t c = p.channels, width = p.stop - p.start;
  for (int64_t row = begin; row < end; row += p.block_rows) {
    const int64_t rows = std::min(p.block_rows, end - row), n = rows * c;
    const float* in = Source(x + row * c, s.x.data(), n);
    Normaliser(p, in, s, n);
    float* out = Target(y + row * c, s.out.data(), width == c);
    for (int64_t q = 0; q < n; ++q) out[q] = in[q] * s.scale[q];
    Store(p, out, y + row * width, rows, width == c);
  }
}

// The gradient of the output channels at their places in the block's rows, zero elsewhere.
template <typename T>
INLINE const float* Gradient(const Params& p, const T* g, Scratch& s, int64_t rows) {
  const int64_t c = p.channels, width = p.stop - p.start;
  if (width == c) return Source(g, s.g.data(), rows * c);
  std::fill(s.g.begin(), s.g.begin() + rows * c, 0.0f);
  for (int64_t i = 0; i < rows; ++i) LoadRow(g + i * width, s.g.data() + i * c + p.start, width);
  return s.g.data();
}

template <typename T>
INLINE void BackwardRange(const Params& p, const T* x, const T* g, T* dx, int64_t begin, int64_t end) {
  Scratch s(p);
  const int64_t c = p.channels, width = p.stop - p.start;
  const float coefficient = 2.0f * p.alpha * p.beta;
  for (int64_t row = begin; row < end; row += p.block_rows) {
    const int64_t rows = std::min(p.block_rows, end - row), n = rows * c;
    const float* in = Source(x + row * c, s.x.data(), n);
    const float* grad = Gradient(p, g + row * width, s, rows);
    Normaliser(p, in, s, n);
    float* t = s.inner();  // t = g * y / d, zero where g is (outside the output channels)
    for (int64_t q = 0; q < n; ++q) t[q] = grad[q] * (in[q] * s.scale[q]) * s.inverse[q];
    float* out = Target(dx + row * c, s.out.data(), true);
    WindowSum(p, t, n, out);  // sum of t over the windows that contain q (the window is symmetric)
    for (int64_t q = 0; q < n; ++q) out[q] = grad[q] * s.scale[q] - coefficient * in[q] * out[q];
    Store(p, out, dx + row * c, rows, true);
  }
}

// The entry points, compiled once per x86-64 level and picked at load time by the CPU (GCC's
// target_clones: an ifunc resolver), so one build runs on any x86-64 and uses AVX2+FMA or AVX-512 where present.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CLONES
#endif

CLONES void Forward(const Params& p, const float* x, float* y, int64_t b, int64_t e) { ForwardRange(p, x, y, b, e); }
CLONES void Forward(const Params& p, const bfloat16* x, bfloat16* y, int64_t b, int64_t e) {
  ForwardRange(p, x, y, b, e);
}
CLONES void Backward(const Params& p, const float* x, const float* g, float* dx, int64_t b, int64_t e) {
  BackwardRange(p, x, g, dx, b, e);
}
CLONES void Backward(const Params& p, const bfloat16* x, const bfloat16* g, bfloat16* dx, int64_t b, int64_t e) {
  BackwardRange(p, x, g, dx, b, e);
}

// ----- op registration -----

absl::Status Attributes(OpKernelConstruction* context, Params* p) {
  int size;
  int64_t start, stop;
  TF_RETURN_IF_ERROR(context->GetAttr("size", &size));
  TF_RETURN_IF_ERROR(context->GetAttr("k", &p->k));
  TF_RETURN_IF_ERROR(context->GetAttr("alpha", &p->alpha));
  TF_RETURN_IF_ERROR(context->GetAttr("beta", &p->beta));
  TF_RETURN_IF_ERROR(context->GetAttr("start", &start));
  TF_RETURN_IF_ERROR(context->GetAttr("stop", &stop));
  if (size < 1 || size % 2 == 0) return InvalidArgument("AlexnetLrn: size=", size, "; expected a positive odd window");
  if (start < 0 || (stop >= 0 && stop <= start))
    return InvalidArgument("AlexnetLrn: start=", start, ", stop=", stop, "; expected 0 <= start < stop, or stop=-1");
  p->radius = size / 2;
  p->start = start;
  p->stop = stop;
  return absl::OkStatus();
}

// The channel range for an input of `channels` channels (stop -1 = all of them).
absl::Status Resolve(const Params& attributes, int64_t channels, Params* p) {
  *p = attributes;
  p->channels = channels;
  if (p->stop < 0) p->stop = channels;
  if (p->stop > channels)
    return InvalidArgument("AlexnetLrn: stop=", p->stop, " for an input of ", channels, " channels");
  MakeMasks(p);
  return absl::OkStatus();
}

void Parallel(OpKernelContext* context, const Params& p, int64_t rows,
              const std::function<void(int64_t, int64_t)>& work) {
  auto* threads = context->device()->tensorflow_cpu_worker_threads();
  const int64_t cost = 12 * p.channels * (2 * p.radius + 1);  // ~cycles per row
  tensorflow::Shard(threads->num_threads, threads->workers, rows, cost, work);
}

// What both kernels do first: the attributes read once, then per call the input's channel axis checked, the
// parameters resolved against its channel count and the shape of the output channel slice [start, stop).
class LrnKernel : public OpKernel {
 public:
  explicit LrnKernel(OpKernelConstruction* context) : OpKernel(context) {
    OP_REQUIRES_OK(context, Attributes(context, &attributes_));
  }

 protected:
  absl::Status Prepare(const Tensor& x, Params* p, TensorShape* slice) const {
    if (x.dims() < 1) return InvalidArgument(type_string(), ": expected an input with a channel axis");
    TF_RETURN_IF_ERROR(Resolve(attributes_, x.dim_size(x.dims() - 1), p));
    *slice = x.shape();
    slice->set_dim(x.dims() - 1, p->stop - p->start);
    return absl::OkStatus();
  }

 private:
  Params attributes_;
};

template <typename T>
class LrnOp : public LrnKernel {
 public:
  using LrnKernel::LrnKernel;

  void Compute(OpKernelContext* context) override {
    const Tensor& x = context->input(0);
    Params p;
    TensorShape shape;
    OP_REQUIRES_OK(context, Prepare(x, &p, &shape));
    Tensor* y = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, shape, &y));
    if (x.NumElements() == 0) return;
    const T* in = x.flat<T>().data();
    T* out = y->flat<T>().data();
    Parallel(context, p, x.NumElements() / p.channels,
             [&](int64_t begin, int64_t end) { Forward(p, in, out, begin, end); });
  }
};

template <typename T>
class LrnGradOp : public LrnKernel {
 public:
  using LrnKernel::LrnKernel;

  void Compute(OpKernelContext* context) override {
    const Tensor& x = context->input(0);
    const Tensor& g = context->input(1);
    Params p;
    TensorShape expected;
    OP_REQUIRES_OK(context, Prepare(x, &p, &expected));
    OP_REQUIRES(context, g.shape() == expected,
                InvalidArgument(type_string(), ": gradient shape ", g.shape().DebugString(), "; expected ",
                                expected.DebugString()));
    Tensor* dx = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, x.shape(), &dx));
    if (x.NumElements() == 0) return;
    const T* in = x.flat<T>().data();
    const T* grad = g.flat<T>().data();
    T* out = dx->flat<T>().data();
    Parallel(context, p, x.NumElements() / p.channels,
             [&](int64_t begin, int64_t end) { Backward(p, in, grad, out, begin, end); });
  }
};

absl::Status OutputShape(shape_inference::InferenceContext* c) {
  int64_t start, stop;
  TF_RETURN_IF_ERROR(c->GetAttr("start", &start));
  TF_RETURN_IF_ERROR(c->GetAttr("stop", &stop));
  if (stop < 0) {
    c->set_output(0, c->input(0));
    return absl::OkStatus();
  }
  shape_inference::ShapeHandle out;
  TF_RETURN_IF_ERROR(c->ReplaceDim(c->input(0), -1, c->MakeDim(stop - start), &out));
  c->set_output(0, out);
  return absl::OkStatus();
}

}  // namespace

#define LRN_ATTRS                                                                                  \
  .Attr("T: {float, bfloat16}")                                                                   \
      .Attr("size: int = 5")                                                                      \
      .Attr("k: float = 2.0")                                                                     \
      .Attr("alpha: float = 1e-4")                                                                \
      .Attr("beta: float = 0.75")                                                                 \
      .Attr("start: int = 0")                                                                     \
      .Attr("stop: int = -1")

REGISTER_OP("AlexnetLrn").Input("x: T").Output("y: T") LRN_ATTRS.SetShapeFn(OutputShape);

REGISTER_OP("AlexnetLrnGrad")
    .Input("x: T")
    .Input("g: T")
    .Output("dx: T") LRN_ATTRS.SetShapeFn([](shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(0));
      return absl::OkStatus();
    });

#define REGISTER(T)                                                                                \
  REGISTER_KERNEL_BUILDER(Name("AlexnetLrn").Device(DEVICE_CPU).TypeConstraint<T>("T"), LrnOp<T>); \
  REGISTER_KERNEL_BUILDER(Name("AlexnetLrnGrad").Device(DEVICE_CPU).TypeConstraint<T>("T"), LrnGradOp<T>);

REGISTER(float)
REGISTER(bfloat16)
