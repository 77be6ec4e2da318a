#pragma once
// The one small op layer every model goes through. Row-major float32 throughout.
// Each op has a plain reference implementation (namespace ref) that the tests compare the fast one against.
#include <cstdint>

namespace sqasam::ops {

// C[M,N] = A[M,K] * B^T + bias, with B stored [N,K] (a PyTorch Linear weight). bias may be null.
// beta = 1 accumulates into C.
void linear(const float* a, const float* weight, const float* bias, float* c, int64_t m, int64_t n, int64_t k,
            float beta = 0.0f);
// C[M,N] = A[M,K] * B[K,N] (+ beta*C), with explicit leading dimensions.
void matmul(const float* a, const float* b, float* c, int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb,
            int64_t ldc, bool transpose_b, float beta = 0.0f);

void layer_norm(const float* x, const float* gamma, const float* beta, float* y, int64_t rows, int64_t dim, float eps);
void gelu(float* x, int64_t n);  // exact (erf) GELU, as torch.nn.GELU()
void relu(float* x, int64_t n);
void softmax_rows(float* x, int64_t rows, int64_t cols);
void add(float* y, const float* x, int64_t n);  // y += x

int num_threads();
void set_num_threads(int n);

namespace ref {
void matmul(const float* a, const float* b, float* c, int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb,
            int64_t ldc, bool transpose_b, float beta = 0.0f);
}  // namespace ref

}  // namespace sqasam::ops
