// Plain reference implementations of every op: the definitions the fast ones are tested against.
// Accumulation is in double so the reference is the more accurate side.
#include <algorithm>
#include <cmath>
#include <vector>

#include "ops/ops.hpp"

namespace sqasam::ops::ref {

void linear(const float* x, const float* weight, const float* bias, float* y, int64_t rows, int64_t out_features,
            int64_t in_features, Epilogue epilogue) {
    for (int64_t r = 0; r < rows; ++r) {
        for (int64_t o = 0; o < out_features; ++o) {
            double sum = bias ? bias[o] : 0.0;
            for (int64_t i = 0; i < in_features; ++i) sum += double(x[r * in_features + i]) * weight[o * in_features + i];
            float& out = y[r * out_features + o];
            switch (epilogue) {
                case Epilogue::store: out = float(sum); break;
                case Epilogue::gelu: out = float(0.5 * sum * (1.0 + std::erf(sum / std::sqrt(2.0)))); break;
                case Epilogue::relu: out = float(std::max(sum, 0.0)); break;
                case Epilogue::accumulate: out = float(out + sum); break;
            }
        }
    }
}

void matmul(const float* a, const float* b, float* c, int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb,
            int64_t ldc, bool transpose_b, float alpha, float beta) {
    for (int64_t i = 0; i < m; ++i) {
        for (int64_t j = 0; j < n; ++j) {
            double sum = 0;
            for (int64_t p = 0; p < k; ++p) sum += double(a[i * lda + p]) * (transpose_b ? b[j * ldb + p] : b[p * ldb + j]);
            float& out = c[i * ldc + j];
            out = float(alpha * sum + (beta == 0.0f ? 0.0 : double(beta) * out));
        }
    }
}

void layer_norm(const float* x, const float* gamma, const float* beta, float* y, int64_t rows, int64_t dim, float eps,
                const float* addend, float* y_plus) {
    for (int64_t r = 0; r < rows; ++r) {
        const float* row = x + r * dim;
        double mean = 0, var = 0;
        for (int64_t i = 0; i < dim; ++i) mean += row[i];
        mean /= dim;
        for (int64_t i = 0; i < dim; ++i) var += (row[i] - mean) * (row[i] - mean);
        var /= dim;
        double inv = 1.0 / std::sqrt(var + eps);
        for (int64_t i = 0; i < dim; ++i) y[r * dim + i] = float((row[i] - mean) * inv * gamma[i] + beta[i]);
        if (addend)
            for (int64_t i = 0; i < dim; ++i) y_plus[r * dim + i] = y[r * dim + i] + addend[r * dim + i];
    }
}

void gelu(float* x, int64_t n) {
    for (int64_t i = 0; i < n; ++i) x[i] = float(0.5 * x[i] * (1.0 + std::erf(x[i] / std::sqrt(2.0))));
}

void relu(float* x, int64_t n) {
    for (int64_t i = 0; i < n; ++i) x[i] = std::max(x[i], 0.0f);
}

void softmax_rows(float* x, int64_t rows, int64_t cols) {
    for (int64_t r = 0; r < rows; ++r) {
        float* row = x + r * cols;
        double top = *std::max_element(row, row + cols), sum = 0;
        for (int64_t i = 0; i < cols; ++i) sum += std::exp(double(row[i]) - top);
        for (int64_t i = 0; i < cols; ++i) row[i] = float(std::exp(double(row[i]) - top) / sum);
    }
}

void add(float* y, const float* x, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

void exp(float* x, int64_t n) {
    for (int64_t i = 0; i < n; ++i) x[i] = std::exp(x[i]);
}

void transpose(const float* src, float* dst, int64_t rows, int64_t cols, int64_t src_stride, int64_t dst_stride) {
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) dst[c * dst_stride + r] = src[r * src_stride + c];
}

void attention(const float* q, const float* k, const float* v, float* out, const AttentionShape& s, float scale,
               const RelativePosition* rel_pos, const float* logit_bias) {
    std::vector<double> logits(s.keys);
    for (int64_t b = 0; b < s.batch; ++b) {
        for (int64_t h = 0; h < s.heads; ++h) {
            for (int64_t i = 0; i < s.queries; ++i) {
                const float* qi = q + b * s.q_batch_stride + i * s.q_row_stride + h * s.head_dim;
                for (int64_t j = 0; j < s.keys; ++j) {
                    double dot = 0;
                    for (int64_t c = 0; c < s.head_dim; ++c) {
                        const int64_t channel = h * s.head_dim + c;
                        const int64_t at = s.k_transposed ? channel * s.k_row_stride + j : j * s.k_row_stride + channel;
                        dot += double(qi[c]) * k[b * s.k_batch_stride + at];
                    }
                    logits[j] = scale * dot;
                    if (rel_pos) {
                        int64_t qh = i / rel_pos->grid_w, qw = i % rel_pos->grid_w;
                        int64_t kh = j / rel_pos->grid_w, kw = j % rel_pos->grid_w;
                        const float* rh = rel_pos->table_h + (qh - kh + rel_pos->grid_h - 1) * s.head_dim;
                        const float* rw = rel_pos->table_w + (qw - kw + rel_pos->grid_w - 1) * s.head_dim;
                        for (int64_t c = 0; c < s.head_dim; ++c) logits[j] += double(qi[c]) * (rh[c] + rw[c]);
                    }
                    if (logit_bias) logits[j] += logit_bias[(h * s.queries + i) * s.keys + j];
                }
                double top = *std::max_element(logits.begin(), logits.end()), sum = 0;
                for (double& l : logits) sum += (l = std::exp(l - top));
                float* oi = out + b * s.out_batch_stride + i * s.out_row_stride + h * s.head_dim;
                for (int64_t c = 0; c < s.head_dim; ++c) {
                    double acc = 0;
                    for (int64_t j = 0; j < s.keys; ++j)
                        acc += logits[j] * v[b * s.v_batch_stride + j * s.v_row_stride + h * s.head_dim + c];
                    oi[c] = float(acc / sum);
                }
            }
        }
    }
}

float round_to_bf16(float x) {
    // x = m 2^e with 0.5 <= |m| < 1: keep 8 bits of m, rounding to nearest even (the default rounding mode).
    int exponent = 0;
    const double mantissa = std::frexp(double(x), &exponent);
    return float(std::ldexp(std::nearbyint(std::ldexp(mantissa, 8)), exponent - 8));
}

std::vector<float> round_to_bf16(std::vector<float> values) {
    for (float& v : values) v = round_to_bf16(v);
    return values;
}

}  // namespace sqasam::ops::ref
