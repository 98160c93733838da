// Fused float32 CPU kernels for the fast SV-Mixer blocks (svmix/models/fast/svmixer.py).
// svmix/models/fast/kernels.py compiles this file on first use for the CPU's instruction set; each
// kernel replaces two to four PyTorch passes over the frames, and fast/svmixer.py keeps a PyTorch
// fallback for every one of them. GELU is the exact (erf) one, written as ATen's CPU kernel writes it.
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512DQ__) && defined(__AVX512VL__)
#define CPU_CAPABILITY_AVX512
#elif defined(__AVX2__) && defined(__FMA__)
#define CPU_CAPABILITY_AVX2
#endif
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <vector>

namespace {

using Vec = at::vec::Vectorized<float>;
constexpr int64_t kLanes = Vec::size();
constexpr int64_t kBlockVectors = 4;  // independent accumulators per step (hides FMA latency)
constexpr int64_t kBlock = kBlockVectors * kLanes;

inline Vec gelu(Vec x) {
  return x * Vec(0.5f) * (Vec(1.0f) + (x * Vec(static_cast<float>(M_SQRT1_2))).erf());
}

inline float gelu(float x) {
  return x * 0.5f * (1.0f + std::erf(x * static_cast<float>(M_SQRT1_2)));
}

inline float sum_lanes(Vec v) {
  float lanes[kLanes];
  v.store(lanes);
  float total = 0.0f;
  for (int64_t i = 0; i < kLanes; ++i) total += lanes[i];
  return total;
}

void check_float_cpu(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat, name, " must be a float32 CPU tensor");
}

struct RowStats {
  float mean, rstd;
};

inline RowStats row_stats(const float* xr, int64_t hidden, float eps) {
  Vec acc(0.0f);
  int64_t i = 0;
  for (; i + kLanes <= hidden; i += kLanes) acc += Vec::loadu(xr + i);
  float total = sum_lanes(acc);
  for (; i < hidden; ++i) total += xr[i];
  const float mean = total / hidden;
  const Vec mean_vec(mean);
  acc = Vec(0.0f);
  for (i = 0; i + kLanes <= hidden; i += kLanes) {
    const Vec d = Vec::loadu(xr + i) - mean_vec;
    acc = at::vec::fmadd(d, d, acc);
  }
  float squares = sum_lanes(acc);
  for (; i < hidden; ++i) squares += (xr[i] - mean) * (xr[i] - mean);
  return {mean, 1.0f / std::sqrt(squares / hidden + eps)};
}

// out[r, g, :] = LayerNorm(x[r])[g*h:(g+1)*h] for x (R, H) contiguous (R = T*B time-major frames) and
// out (R, G, h) with unit inner stride, e.g. a view into a GEMM input buffer that has a ones column
// after every group. With `pooled` ((T/2)*B, G, h), also the sum of each pair of frames 2l, 2l+1 (the
// half-rate path's average pool, its 1/2 being folded into the weights that follow).
void layer_norm_into(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, double eps,
                     at::Tensor out, const std::optional<at::Tensor>& pooled, int64_t batch) {
  check_float_cpu(x, "x");
  check_float_cpu(out, "out");
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous(), "x must be contiguous (R, H)");
  TORCH_CHECK(out.dim() == 3 && out.stride(2) == 1 && out.size(0) == x.size(0) &&
                  out.size(1) * out.size(2) == x.size(1), "out must be (R, G, H/G) with unit inner stride");
  TORCH_CHECK(weight.is_contiguous() && bias.is_contiguous() && weight.numel() == x.size(1) &&
                  bias.numel() == x.size(1), "weight and bias must be contiguous (H)");
  const int64_t rows = x.size(0), hidden = x.size(1), groups = out.size(1), size = out.size(2);
  TORCH_CHECK(batch > 0 && rows % batch == 0, "batch must divide the rows");
  const int64_t frames = rows / batch;
  float* pp = nullptr;
  int64_t pooled_row_stride = 0, pooled_group_stride = 0;
  if (pooled.has_value()) {
    check_float_cpu(*pooled, "pooled");
    TORCH_CHECK(pooled->dim() == 3 && pooled->stride(2) == 1 && pooled->size(0) == (frames / 2) * batch &&
                    pooled->size(1) == groups && pooled->size(2) == size,
                "pooled must be (T/2 * B, G, H/G) with unit inner stride");
    pp = pooled->data_ptr<float>();
    pooled_row_stride = pooled->stride(0);
    pooled_group_stride = pooled->stride(1);
  }
  const int64_t row_stride = out.stride(0), group_stride = out.stride(1);
  const float* xp = x.data_ptr<float>();
  const float* wp = weight.data_ptr<float>();
  const float* bp = bias.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const float eps_f = static_cast<float>(eps);
  // one task: frames 2p and 2p+1 of one utterance (the last task of an odd T has one frame)
  at::parallel_for(0, (frames + 1) / 2 * batch, 4, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t p = task / batch, b = task % batch;
      const int64_t r0 = 2 * p * batch + b, r1 = r0 + batch;
      const bool pair = 2 * p + 1 < frames;
      const float* x0 = xp + r0 * hidden;
      const float* x1 = pair ? xp + r1 * hidden : x0;
      const RowStats s0 = row_stats(x0, hidden, eps_f);
      const RowStats s1 = pair ? row_stats(x1, hidden, eps_f) : s0;
      const Vec m0(s0.mean), q0(s0.rstd), m1(s1.mean), q1(s1.rstd);
      for (int64_t g = 0; g < groups; ++g) {
        const int64_t c0 = g * size;
        float* o0 = op + r0 * row_stride + g * group_stride;
        float* o1 = pair ? op + r1 * row_stride + g * group_stride : o0;
        float* po = pp == nullptr ? nullptr : pp + (p * batch + b) * pooled_row_stride + g * pooled_group_stride;
        int64_t j = 0;
        for (; j + kLanes <= size; j += kLanes) {
          const Vec w = Vec::loadu(wp + c0 + j), c = Vec::loadu(bp + c0 + j);
          const Vec n0 = at::vec::fmadd((Vec::loadu(x0 + c0 + j) - m0) * q0, w, c);
          n0.store(o0 + j);
          if (pair) {
            const Vec n1 = at::vec::fmadd((Vec::loadu(x1 + c0 + j) - m1) * q1, w, c);
            n1.store(o1 + j);
            if (po != nullptr) (n0 + n1).store(po + j);
          }
        }
        for (; j < size; ++j) {
          const float n0 = (x0[c0 + j] - s0.mean) * s0.rstd * wp[c0 + j] + bp[c0 + j];
          o0[j] = n0;
          if (pair) {
            const float n1 = (x1[c0 + j] - s1.mean) * s1.rstd * wp[c0 + j] + bp[c0 + j];
            o1[j] = n1;
            if (po != nullptr) po[j] = n0 + n1;
          }
        }
      }
    }
  });
}

// The parallel LGM local branch on time-major frames: x + second(GELU(first(y))), both depthwise
// Conv1d over time with "same" zero padding; x, y (T, B, H) contiguous, taps as (k, H) rows.
at::Tensor local_mixing(const at::Tensor& x, const at::Tensor& y, const at::Tensor& first_taps,
                        const at::Tensor& first_bias, const at::Tensor& second_taps, const at::Tensor& second_bias) {
  for (const auto* t : {&x, &y, &first_taps, &first_bias, &second_taps, &second_bias}) check_float_cpu(*t, "input");
  TORCH_CHECK(x.dim() == 3 && x.is_contiguous() && y.is_contiguous() && y.sizes() == x.sizes(),
              "x and y must be contiguous (T, B, H) of one shape");
  const int64_t frames = x.size(0), batch = x.size(1), hidden = x.size(2);
  TORCH_CHECK(first_taps.is_contiguous() && second_taps.is_contiguous() && first_taps.size(1) == hidden &&
                  second_taps.size(1) == hidden && first_taps.size(0) % 2 == 1 && second_taps.size(0) % 2 == 1,
              "taps must be contiguous (k, H) with odd k");
  const int64_t k1 = first_taps.size(0), k2 = second_taps.size(0), pad1 = k1 / 2, pad2 = k2 / 2;
  at::Tensor out = at::empty_like(x);
  const float* xp = x.data_ptr<float>();
  const float* yp = y.data_ptr<float>();
  const float* w1 = first_taps.data_ptr<float>();
  const float* b1 = first_bias.data_ptr<float>();
  const float* w2 = second_taps.data_ptr<float>();
  const float* b2 = second_bias.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t frame_stride = batch * hidden;
  const int64_t blocks = (hidden + kBlock - 1) / kBlock;
  at::parallel_for(0, batch * blocks, 1, [&](int64_t begin, int64_t end) {
    // GELU(first(y)) of one utterance's channel block, all frames, between zero frames (never written)
    std::vector<float> hidden_block((frames + 2 * pad2) * kBlock, 0.0f);
    float* gp = hidden_block.data() + pad2 * kBlock;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / blocks, c0 = (task % blocks) * kBlock;
      const int64_t width = std::min(kBlock, hidden - c0);
      const float* yb = yp + b * hidden + c0;
      const float* xb = xp + b * hidden + c0;
      float* ob = op + b * hidden + c0;
      if (width == kBlock) {
        for (int64_t t = 0; t < frames; ++t) {
          Vec acc[kBlockVectors];
          for (int64_t v = 0; v < kBlockVectors; ++v) acc[v] = Vec::loadu(b1 + c0 + v * kLanes);
          const int64_t k_begin = std::max<int64_t>(0, pad1 - t), k_end = std::min(k1, frames + pad1 - t);
          for (int64_t k = k_begin; k < k_end; ++k) {
            const float* ys = yb + (t + k - pad1) * frame_stride;
            const float* wk = w1 + k * hidden + c0;
            for (int64_t v = 0; v < kBlockVectors; ++v)
              acc[v] = at::vec::fmadd(Vec::loadu(wk + v * kLanes), Vec::loadu(ys + v * kLanes), acc[v]);
          }
          for (int64_t v = 0; v < kBlockVectors; ++v) gelu(acc[v]).store(gp + t * kBlock + v * kLanes);
        }
        for (int64_t t = 0; t < frames; ++t) {
          Vec acc[kBlockVectors];
          for (int64_t v = 0; v < kBlockVectors; ++v)
            acc[v] = Vec::loadu(b2 + c0 + v * kLanes) + Vec::loadu(xb + t * frame_stride + v * kLanes);
          for (int64_t k = 0; k < k2; ++k) {
            const float* gs = gp + (t + k - pad2) * kBlock;
            const float* wk = w2 + k * hidden + c0;
            for (int64_t v = 0; v < kBlockVectors; ++v)
              acc[v] = at::vec::fmadd(Vec::loadu(wk + v * kLanes), Vec::loadu(gs + v * kLanes), acc[v]);
          }
          for (int64_t v = 0; v < kBlockVectors; ++v) acc[v].store(ob + t * frame_stride + v * kLanes);
        }
      } else {  // the last, narrower block of channels
        for (int64_t t = 0; t < frames; ++t)
          for (int64_t c = 0; c < width; ++c) {
            float acc = b1[c0 + c];
            for (int64_t k = std::max<int64_t>(0, pad1 - t); k < std::min(k1, frames + pad1 - t); ++k)
              acc += w1[k * hidden + c0 + c] * yb[(t + k - pad1) * frame_stride + c];
            gp[t * kBlock + c] = gelu(acc);
          }
        for (int64_t t = 0; t < frames; ++t)
          for (int64_t c = 0; c < width; ++c) {
            float acc = b2[c0 + c] + xb[t * frame_stride + c];
            for (int64_t k = 0; k < k2; ++k) acc += w2[k * hidden + c0 + c] * gp[(t + k - pad2) * kBlock + c];
            ob[t * frame_stride + c] = acc;
          }
      }
    }
  });
  return out;
}

// out[r, g, :] = GELU(src[g, r, :]) for src (G, R, h) contiguous and out (R, G, h) with unit inner
// stride: the merge output activated and turned channels-last in one pass.
void gelu_transpose_into(const at::Tensor& src, at::Tensor out) {
  check_float_cpu(src, "src");
  check_float_cpu(out, "out");
  TORCH_CHECK(src.dim() == 3 && src.is_contiguous(), "src must be contiguous (G, R, h)");
  const int64_t groups = src.size(0), rows = src.size(1), size = src.size(2);
  TORCH_CHECK(out.dim() == 3 && out.size(0) == rows && out.size(1) == groups && out.size(2) == size &&
                  out.stride(2) == 1, "out must be (R, G, h) with unit inner stride");
  const float* sp = src.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t row_stride = out.stride(0), group_stride = out.stride(1);
  at::parallel_for(0, rows, 8, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r)
      for (int64_t g = 0; g < groups; ++g) {
        const float* s = sp + (g * rows + r) * size;
        float* o = op + r * row_stride + g * group_stride;
        int64_t j = 0;
        for (; j + kLanes <= size; j += kLanes) gelu(Vec::loadu(s + j)).store(o + j);
        for (; j < size; ++j) o[j] = gelu(s[j]);
      }
  });
}

// out[g, t*B + b] = z[g, t*B + b] + w0[t] * low[g, i0[t]*B + b] + w1[t] * low[g, i1[t]*B + b] + bias[g]:
// the multi-scale merge input, i.e. the full-rate path plus the linearly upsampled half-rate path
// (index and weight (T, 2): the two source frames of each output frame), written into a strided view.
void upsample_add_into(const at::Tensor& z, const at::Tensor& low, const at::Tensor& index, const at::Tensor& weight,
                       const at::Tensor& bias, at::Tensor out) {
  for (const at::Tensor* t : {&z, &low, &weight, &bias, static_cast<const at::Tensor*>(&out)}) check_float_cpu(*t, "input");
  TORCH_CHECK(z.dim() == 3 && z.is_contiguous() && low.dim() == 3 && low.is_contiguous() &&
                  low.size(0) == z.size(0) && low.size(2) == z.size(2), "z and low must be contiguous (G, rows, h)");
  const int64_t groups = z.size(0), rows = z.size(1), size = z.size(2), frames = index.size(0);
  TORCH_CHECK(index.scalar_type() == at::kLong && index.is_contiguous() && weight.is_contiguous() &&
                  index.dim() == 2 && index.size(1) == 2 && weight.sizes() == index.sizes() && rows % frames == 0,
              "index (int64) and weight must be contiguous (T, 2), T dividing the rows");
  TORCH_CHECK(bias.is_contiguous() && bias.numel() == groups * size, "bias must be contiguous (G, h)");
  TORCH_CHECK(out.dim() == 3 && out.size(0) == groups && out.size(1) == rows && out.size(2) == size &&
                  out.stride(2) == 1, "out must be (G, rows, h) with unit inner stride");
  const int64_t batch = rows / frames, low_rows = low.size(1);
  const int64_t* ip = index.data_ptr<int64_t>();
  for (int64_t i = 0; i < 2 * frames; ++i) TORCH_CHECK(ip[i] >= 0 && ip[i] * batch < low_rows, "index out of range");
  const float* zp = z.data_ptr<float>();
  const float* lp = low.data_ptr<float>();
  const float* wp = weight.data_ptr<float>();
  const float* bp = bias.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t group_stride = out.stride(0), row_stride = out.stride(1);
  at::parallel_for(0, groups * frames, 4, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t g = task / frames, t = task % frames;
      const Vec w0(wp[2 * t]), w1(wp[2 * t + 1]);
      const float s0 = wp[2 * t], s1 = wp[2 * t + 1];
      const float* bg = bp + g * size;
      for (int64_t b = 0; b < batch; ++b) {
        const int64_t r = t * batch + b;
        const float* zr = zp + (g * rows + r) * size;
        const float* l0 = lp + (g * low_rows + ip[2 * t] * batch + b) * size;
        const float* l1 = lp + (g * low_rows + ip[2 * t + 1] * batch + b) * size;
        float* o = op + g * group_stride + r * row_stride;
        int64_t j = 0;
        for (; j + kLanes <= size; j += kLanes) {
          const Vec acc = Vec::loadu(zr + j) + Vec::loadu(bg + j);
          at::vec::fmadd(w1, Vec::loadu(l1 + j), at::vec::fmadd(w0, Vec::loadu(l0 + j), acc)).store(o + j);
        }
        for (; j < size; ++j) o[j] = zr[j] + bg[j] + s0 * l0[j] + s1 * l1[j];
      }
    }
  });
}

}  // namespace

TORCH_LIBRARY(svmix_cpu, m) {
  m.def("layer_norm_into", &layer_norm_into);
  m.def("local_mixing", &local_mixing);
  m.def("gelu_transpose_into", &gelu_transpose_into);
  m.def("upsample_add_into", &upsample_add_into);
}
