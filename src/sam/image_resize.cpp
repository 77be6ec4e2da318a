// Bit-exact reproductions of Pillow's and scipy's resamplers: every expression below keeps the reference's order
// of operations, and fused multiply-adds are disabled for this file (the references are built without them; a
// fused a*b+c rounds once instead of twice and would change the last bit, and then an 8-bit rounding).
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "sam/image_resize.hpp"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <vector>

namespace sqasam::sam {
namespace {

void require_8bit(const cv::Mat& image, const char* what) {
    if (image.depth() != CV_8U || image.channels() < 1 || image.channels() > 4 || image.empty())
        throw std::invalid_argument(std::string(what) + ": expected a non-empty 8-bit image with 1 to 4 channels");
}

// ---- Pillow (libImaging/Resample.c) ----

constexpr int kPillowPrecisionBits = 32 - 8 - 2;

// precompute_coeffs() for the bilinear (triangle) filter over the whole input, then normalize_coeffs_8bpc().
struct PillowCoefficients {
    int kernel_size = 0;
    std::vector<int> first, count;  // per output sample: first input index and number of taps
    std::vector<int32_t> weights;   // kernel_size per output sample
};

PillowCoefficients pillow_bilinear_coefficients(int in_size, int out_size) {
    const double filter_support = 1.0;
    const float in0 = 0.0f, in1 = static_cast<float>(in_size);
    double scale = static_cast<double>(in1 - in0) / out_size;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = filter_support * filterscale;
    PillowCoefficients c;
    c.kernel_size = static_cast<int>(std::ceil(support)) * 2 + 1;
    c.first.resize(out_size);
    c.count.resize(out_size);
    c.weights.assign(static_cast<size_t>(out_size) * c.kernel_size, 0);
    std::vector<double> k(c.kernel_size);
    for (int xx = 0; xx < out_size; ++xx) {
        double center = in0 + (xx + 0.5) * scale;
        double ww = 0.0;
        double ss = 1.0 / filterscale;
        int xmin = static_cast<int>(center - support + 0.5);
        if (xmin < 0) xmin = 0;
        int xmax = static_cast<int>(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        for (int x = 0; x < xmax; ++x) {
            double t = (x + xmin - center + 0.5) * ss;
            if (t < 0.0) t = -t;
            double w = t < 1.0 ? 1.0 - t : 0.0;
            k[x] = w;
            ww += w;
        }
        for (int x = 0; x < xmax; ++x) {
            if (ww != 0.0) k[x] /= ww;
        }
        int32_t* fixed = &c.weights[static_cast<size_t>(xx) * c.kernel_size];
        for (int x = 0; x < xmax; ++x) {
            double scaled = k[x] * (1 << kPillowPrecisionBits);
            fixed[x] = static_cast<int32_t>(k[x] < 0 ? -0.5 + scaled : 0.5 + scaled);
        }
        c.first[xx] = xmin;
        c.count[xx] = xmax;
    }
    return c;
}

inline uint8_t pillow_clip8(int32_t value) {
    int32_t shifted = value >> kPillowPrecisionBits;  // arithmetic shift, as in Pillow
    return static_cast<uint8_t>(std::clamp(shifted, 0, 255));
}

// One pass over rows [row_offset, row_offset + out.rows) of `in`, resampling along x.
void pillow_horizontal(const cv::Mat& in, int row_offset, const PillowCoefficients& c, cv::Mat& out) {
    const int channels = in.channels();
    for (int y = 0; y < out.rows; ++y) {
        const uint8_t* src = in.ptr<uint8_t>(y + row_offset);
        uint8_t* dst = out.ptr<uint8_t>(y);
        for (int xx = 0; xx < out.cols; ++xx) {
            const int32_t* k = &c.weights[static_cast<size_t>(xx) * c.kernel_size];
            for (int ch = 0; ch < channels; ++ch) {
                int32_t sum = 1 << (kPillowPrecisionBits - 1);
                for (int x = 0; x < c.count[xx]; ++x) sum += src[(x + c.first[xx]) * channels + ch] * k[x];
                dst[xx * channels + ch] = pillow_clip8(sum);
            }
        }
    }
}

// Resampling along y; `first` is relative to the rows of `in`. Whole rows at a time: the sums are integers, so
// their order does not matter.
void pillow_vertical(const cv::Mat& in, const PillowCoefficients& c, const std::vector<int>& first, cv::Mat& out) {
    const int width = in.cols * in.channels();
    std::vector<int32_t> sum(width);
    for (int yy = 0; yy < out.rows; ++yy) {
        const int32_t* k = &c.weights[static_cast<size_t>(yy) * c.kernel_size];
        std::fill(sum.begin(), sum.end(), 1 << (kPillowPrecisionBits - 1));
        for (int y = 0; y < c.count[yy]; ++y) {
            const uint8_t* src = in.ptr<uint8_t>(y + first[yy]);
            for (int i = 0; i < width; ++i) sum[i] += src[i] * k[y];
        }
        uint8_t* dst = out.ptr<uint8_t>(yy);
        for (int i = 0; i < width; ++i) dst[i] = pillow_clip8(sum[i]);
    }
}

// ---- scipy.ndimage (ni_filters.c, ni_splines.c, ni_interpolation.c) and numpy ----

// An (rows x cols x channels) double array, C order, like the numpy array skimage works on.
struct Volume {
    int dims[3] = {0, 0, 0};
    std::vector<double> data;
    int64_t stride(int axis) const { return axis == 0 ? int64_t(dims[1]) * dims[2] : axis == 1 ? dims[2] : 1; }
};

// numpy's pairwise summation (what phi.sum() computes for a float64 vector).
double numpy_pairwise_sum(const double* a, int64_t n) {
    if (n < 8) {
        double sum = 0.0;
        for (int64_t i = 0; i < n; ++i) sum += a[i];
        return sum;
    }
    if (n <= 128) {
        double r[8];
        for (int j = 0; j < 8; ++j) r[j] = a[j];
        int64_t i = 8;
        for (; i < n - (n % 8); i += 8)
            for (int j = 0; j < 8; ++j) r[j] += a[i + j];
        double sum = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < n; ++i) sum += a[i];
        return sum;
    }
    int64_t half = n / 2;
    half -= half % 8;
    return numpy_pairwise_sum(a, half) + numpy_pairwise_sum(a + half, n - half);
}

// scipy's _gaussian_kernel1d(sigma, 0, radius) with radius = int(4 * sigma + 0.5). The exponentials come from
// libm; numpy's own exp (an AVX-512 kernel where the CPU has one) can differ in the last bit.
std::vector<double> gaussian_kernel(double sigma) {
    const int radius = static_cast<int>(4.0 * sigma + 0.5);
    const double sigma2 = sigma * sigma;
    std::vector<double> phi(2 * radius + 1);
    for (int i = 0; i <= 2 * radius; ++i) {
        const int64_t x = i - radius;
        phi[i] = std::exp(-0.5 / sigma2 * static_cast<double>(x * x));
    }
    const double sum = numpy_pairwise_sum(phi.data(), static_cast<int64_t>(phi.size()));
    for (double& v : phi) v = v / sum;
    return phi;
}

// Index of sample i (any integer) of a line of length n extended by mirroring without repeating the edge
// (d c b | a b c d | c b a): scipy's "mirror" mode.
inline int64_t mirror_index(int64_t i, int64_t n) {
    if (n <= 1) return 0;
    const int64_t period = 2 * n - 2;
    if (i < 0) {
        i = period * (-i / period) + i;
        return i <= 1 - n ? i + period : -i;
    }
    if (i >= n) {
        i -= period * (i / period);
        if (i >= n) i = period - i;
    }
    return i;
}

// Calls fn(line, n) for each 1-D line of the volume along `axis`, with the line copied into a contiguous buffer
// and copied back afterwards (scipy's line buffers). Lines go in blocks of neighbours, so that a pass along a
// strided axis still reads memory row by row.
template <typename Fn>
void for_each_line(Volume& v, int axis, Fn&& fn) {
    constexpr int64_t kBlock = 64;
    const int64_t n = v.dims[axis], stride = v.stride(axis);
    const int a = axis == 0 ? 1 : 0, b = axis == 2 ? 1 : 2;  // the two other axes
    const int64_t lines = int64_t(v.dims[a]) * v.dims[b];
    const int64_t blocks = (lines + kBlock - 1) / kBlock;
#pragma omp parallel
    {
        std::vector<double> buffer(kBlock * n);
        int64_t base[kBlock];
#pragma omp for schedule(static)
        for (int64_t block = 0; block < blocks; ++block) {
            const int64_t first = block * kBlock, count = std::min(kBlock, lines - first);
            for (int64_t j = 0; j < count; ++j)
                base[j] = ((first + j) / v.dims[b]) * v.stride(a) + ((first + j) % v.dims[b]) * v.stride(b);
            for (int64_t i = 0; i < n; ++i)
                for (int64_t j = 0; j < count; ++j) buffer[j * n + i] = v.data[base[j] + i * stride];
            for (int64_t j = 0; j < count; ++j) fn(&buffer[j * n], n);
            for (int64_t i = 0; i < n; ++i)
                for (int64_t j = 0; j < count; ++j) v.data[base[j] + i * stride] = buffer[j * n + i];
        }
    }
}

// scipy.ndimage.correlate1d with a symmetric kernel and mirror boundary (NI_Correlate1D's symmetric branch).
void gaussian_filter_axis(Volume& v, int axis, double sigma) {
    const std::vector<double> weights = gaussian_kernel(sigma);
    const int radius = static_cast<int>(weights.size() / 2);
    const double* fw = weights.data() + radius;
    for_each_line(v, axis, [&](double* line, int64_t n) {
        std::vector<double> extended(n + 2 * radius);
        for (int64_t i = 0; i < n + 2 * radius; ++i) extended[i] = line[mirror_index(i - radius, n)];
        for (int64_t l = 0; l < n; ++l) {
            const double* iline = extended.data() + radius + l;
            double sum = iline[0] * fw[0];
            for (int j = -radius; j < 0; ++j) sum += (iline[j] + iline[-j]) * fw[j];
            line[l] = sum;
        }
    });
}

// One line of the cubic B-spline prefilter (ni_splines.c apply_filter with _init_causal_mirror and
// _init_anticausal_mirror); z is the pole, z_n_1 = z^(n-1).
void cubic_spline_prefilter_line(double* c, int64_t n, double z, double gain, double z_n_1) {
    for (int64_t i = 0; i < n; ++i) c[i] *= gain;
    double z_i = z;
    c[0] = c[0] + z_n_1 * c[n - 1];
    for (int64_t i = 1; i < n - 1; ++i) {
        c[0] += z_i * (c[i] + z_n_1 * c[n - 1 - i]);
        z_i *= z;
    }
    c[0] /= 1 - z_n_1 * z_n_1;
    for (int64_t i = 1; i < n; ++i) c[i] += z * c[i - 1];
    // anticausal initialisation (_init_anticausal_mirror)
    c[n - 1] = (z * c[n - 2] + c[n - 1]) * z / (z * z - 1);
    for (int64_t i = n - 2; i >= 0; --i) c[i] = z * (c[i + 1] - c[i]);
}

// The cubic B-spline prefilter along one axis, mirror boundary (ni_splines.c apply_filter, one pole).
void cubic_spline_prefilter(Volume& v, int axis) {
    const int64_t n = v.dims[axis];
    if (n <= 1) return;
    const double z = -0.267949192431122706472553658494127633;  // sqrt(3) - 2
    const double gain = 1.0 * ((1.0 - z) * (1.0 - 1.0 / z));
    const double z_n_1 = std::pow(z, static_cast<double>(n - 1));
    for_each_line(v, axis, [&](double* c, int64_t) { cubic_spline_prefilter_line(c, n, z, gain, z_n_1); });
}

// get_spline_interpolation_weights(x, order 3).
void cubic_spline_weights(double x, double w[4]) {
    x -= std::floor(x);
    const double y = x, z = 1.0 - x;
    w[1] = (y * y * (y - 2.0) * 3.0 + 4.0) / 6.0;
    w[2] = (z * z * (z - 2.0) * 3.0 + 4.0) / 6.0;
    w[0] = z * z * z / 6.0;
    w[3] = 1.0;
    for (int i = 0; i < 3; ++i) w[3] -= w[i];
}

// map_coordinate() for mirror mode: a sample coordinate outside [0, n-1] folded back inside.
double mirror_coordinate(double in, int64_t n) {
    if (n <= 1) return 0;
    const int64_t period = 2 * n - 2;
    if (in < 0) {
        in = period * static_cast<int64_t>(-in / period) + in;
        return in <= 1 - n ? in + period : -in;
    }
    if (in > n - 1) {
        in -= period * static_cast<int64_t>(in / period);
        if (in >= n) in = period - in;
    }
    return in;
}

// Taps and weights of the cubic spline at each output coordinate along one axis (NI_ZoomShift, grid_mode).
struct AxisTaps {
    std::vector<int64_t> index;  // 4 per output sample, already mirrored into [0, n)
    std::vector<double> weight;  // 4 per output sample
};

AxisTaps zoom_taps(int64_t in_size, int64_t out_size) {
    const double zoom = static_cast<double>(in_size) / static_cast<double>(out_size);
    AxisTaps taps;
    taps.index.resize(out_size * 4);
    taps.weight.resize(out_size * 4);
    for (int64_t k = 0; k < out_size; ++k) {
        double cc = static_cast<double>(k);
        cc += 0.5;
        cc *= zoom;
        cc -= 0.5;
        cc = mirror_coordinate(cc, in_size);
        const int64_t start = static_cast<int64_t>(std::floor(cc)) - 1;
        for (int h = 0; h < 4; ++h) taps.index[k * 4 + h] = mirror_index(start + h, in_size);
        cubic_spline_weights(cc, &taps.weight[k * 4]);
    }
    return taps;
}

}  // namespace

cv::Mat pillow_resize_bilinear(const cv::Mat& image, cv::Size size) {
    require_8bit(image, "pillow_resize_bilinear");
    if (size.width <= 0 || size.height <= 0) throw std::invalid_argument("pillow_resize_bilinear: empty size");
    if (size == image.size()) return image.clone();
    const PillowCoefficients vertical = pillow_bilinear_coefficients(image.rows, size.height);
    const PillowCoefficients horizontal = pillow_bilinear_coefficients(image.cols, size.width);
    const bool need_horizontal = size.width != image.cols, need_vertical = size.height != image.rows;

    // The horizontal pass covers only the rows the vertical pass reads.
    const int first_row = vertical.first.front();
    const int last_row = vertical.first.back() + vertical.count.back();
    cv::Mat source = image;
    std::vector<int> vertical_first = vertical.first;
    if (need_horizontal) {
        cv::Mat temp(last_row - first_row, size.width, image.type());
        pillow_horizontal(image, first_row, horizontal, temp);
        for (int& f : vertical_first) f -= first_row;
        source = temp;
    }
    if (!need_vertical) return source;
    cv::Mat out(size, image.type());
    pillow_vertical(source, vertical, vertical_first, out);
    return out;
}

cv::Mat skimage_resize_cubic(const cv::Mat& image, cv::Size size) {
    require_8bit(image, "skimage_resize_cubic");
    if (size.width <= 0 || size.height <= 0) throw std::invalid_argument("skimage_resize_cubic: empty size");
    const cv::Mat input = image.isContinuous() ? image : image.clone();
    const int channels = input.channels();
    // A 1-channel cv::Mat is a 2-D numpy array (no channel axis to filter or interpolate along).
    const int rank = channels == 1 ? 2 : 3;
    Volume v;
    v.dims[0] = input.rows;
    v.dims[1] = input.cols;
    v.dims[2] = channels;
    v.data.assign(input.datastart, input.dataend);
    const auto [lowest, highest] = std::minmax_element(v.data.begin(), v.data.end());
    const double clip_low = *lowest, clip_high = *highest;

    // Antialiasing: Gaussian with sigma = max(0, (in/out - 1) / 2) along each axis where it exceeds 1e-15.
    const int out_dims[3] = {size.height, size.width, channels};
    for (int axis = 0; axis < rank; ++axis) {
        const double factor = static_cast<double>(v.dims[axis]) / static_cast<double>(out_dims[axis]);
        const double sigma = std::max(0.0, (factor - 1) / 2);
        if (sigma > 1e-15) gaussian_filter_axis(v, axis, sigma);
    }
    for (int axis = 0; axis < rank; ++axis) cubic_spline_prefilter(v, axis);

    AxisTaps taps[3];
    for (int axis = 0; axis < rank; ++axis) taps[axis] = zoom_taps(v.dims[axis], out_dims[axis]);
    if (rank == 2) {  // a degenerate third axis: one tap of weight 1 (never multiplied in, see below)
        taps[2].index.assign(4, 0);
        taps[2].weight.assign(4, 1.0);
    }
    const int64_t s0 = v.stride(0), s1 = v.stride(1);
    const int64_t* ix = taps[1].index.data();
    const double* wx = taps[1].weight.data();
    const double* coefficients = v.data.data();
    cv::Mat out(size, input.type());
#pragma omp parallel for schedule(static)
    for (int y = 0; y < size.height; ++y) {
        uint8_t* dst = out.ptr<uint8_t>(y);
        const int64_t* iy = &taps[0].index[int64_t(y) * 4];
        const double* wy = &taps[0].weight[int64_t(y) * 4];
        for (int ch = 0; ch < channels; ++ch) {
            const int64_t* ic = &taps[2].index[int64_t(rank == 3 ? ch : 0) * 4];
            const double* wc = &taps[2].weight[int64_t(rank == 3 ? ch : 0) * 4];
            // Terms in scipy's order (last axis fastest), each coefficient multiplied by the weight of every axis
            // in turn. Vectorised across x only: every output keeps its own sequence of operations.
#pragma omp simd
            for (int x = 0; x < size.width; ++x) {
                double t = 0.0;
                for (int a = 0; a < 4; ++a)
                    for (int b = 0; b < 4; ++b) {
                        const int64_t row = iy[a] * s0 + ix[x * 4 + b] * s1;
                        if (rank == 3) {
                            for (int c = 0; c < 4; ++c) {
                                double coeff = coefficients[row + ic[c]];
                                coeff *= wy[a];
                                coeff *= wx[x * 4 + b];
                                coeff *= wc[c];
                                t += coeff;
                            }
                        } else {
                            double coeff = coefficients[row + ch];
                            coeff *= wy[a];
                            coeff *= wx[x * 4 + b];
                            t += coeff;
                        }
                    }
                t = std::clamp(t, clip_low, clip_high);
                dst[x * channels + ch] = static_cast<uint8_t>(t);  // astype(uint8) truncates
            }
        }
    }
    return out;
}

BilinearResampler::Taps BilinearResampler::taps(int in_n, int out_n, int keep) {
    Taps t;
    const float scale = static_cast<float>(in_n) / out_n;
    for (int o = 0; o < keep; ++o) {
        if (in_n == out_n) {
            t.first.push_back(o);
            t.second.push_back(o);
            t.first_weight.push_back(1.0f);
            t.second_weight.push_back(0.0f);
            continue;
        }
        double source = static_cast<double>(scale) * (o + 0.5) - 0.5;
        if (source < 0) source = 0;
        const int index = static_cast<int>(source);
        const float lambda = static_cast<float>(source - index);
        t.first.push_back(index);
        t.second.push_back(index + (index < in_n - 1 ? 1 : 0));
        t.first_weight.push_back(1.0f - lambda);
        t.second_weight.push_back(lambda);
    }
    return t;
}

BilinearResampler::BilinearResampler(cv::Size in_size, cv::Size full_size, cv::Size crop_size)
    : in_size_(in_size),
      x_(taps(in_size.width, full_size.width, crop_size.width)),
      y_(taps(in_size.height, full_size.height, crop_size.height)) {
    for (int index : y_.second) source_rows_ = std::max(source_rows_, index + 1);
    const int width = out_size().width;
    for (int x = 0; x < width; ++x) {
        if (x % kBlock == 0) block_first_.push_back(x_.first[x]);
        first_offset_.push_back(x_.first[x] - block_first_.back());
        second_offset_.push_back(x_.second[x] - block_first_.back());
        if (first_offset_.back() < 0 || second_offset_.back() >= 2 * kBlock) {
            block_first_.clear();
            first_offset_.clear();
            second_offset_.clear();
            break;
        }
    }
}

void BilinearResampler::interpolate_x(const float* in_row, float* out_row) const {
    const int width = out_size().width;
#ifdef __AVX512F__
    if (!block_first_.empty()) {
        static_assert(kBlock == 16, "one 16-float vector per block");
        auto lanes = [](int count) { return __mmask16(count >= 16 ? 0xFFFF : count <= 0 ? 0 : (1u << count) - 1); };
        for (int x = 0, block = 0; x < width; x += kBlock, ++block) {
            const int first_tap = block_first_[block], available = in_size_.width - first_tap;
            const __m512 low = _mm512_maskz_loadu_ps(lanes(available), in_row + first_tap);
            const __m512 high = _mm512_maskz_loadu_ps(lanes(available - kBlock), in_row + first_tap + kBlock);
            const __mmask16 out = lanes(width - x);
            const __m512 a = _mm512_permutex2var_ps(low, _mm512_maskz_loadu_epi32(out, first_offset_.data() + x), high);
            const __m512 b = _mm512_permutex2var_ps(low, _mm512_maskz_loadu_epi32(out, second_offset_.data() + x), high);
            const __m512 w0 = _mm512_maskz_loadu_ps(out, x_.first_weight.data() + x);
            const __m512 w1 = _mm512_maskz_loadu_ps(out, x_.second_weight.data() + x);
            _mm512_mask_storeu_ps(out_row + x, out, _mm512_fmadd_ps(b, w1, _mm512_mul_ps(a, w0)));  // blend()
        }
        return;
    }
#endif
    const int* first = x_.first.data();
    const int* second = x_.second.data();
    const float* w0 = x_.first_weight.data();
    const float* w1 = x_.second_weight.data();
#pragma omp simd
    for (int x = 0; x < width; ++x) out_row[x] = blend(in_row[first[x]], in_row[second[x]], w0[x], w1[x]);
}

void BilinearResampler::interpolate_y(const float* first_row, const float* second_row, int y, float* out_row) const {
    const int width = out_size().width;
    const auto [w0, w1] = y_weights(y);
#pragma omp simd
    for (int x = 0; x < width; ++x) out_row[x] = blend(first_row[x], second_row[x], w0, w1);
}

void BilinearResampler::operator()(const float* in, float* out, std::vector<float>& scratch) const {
    const cv::Size size = out_size();
    scratch.resize(size_t(source_rows_) * size.width);
    float* rows = scratch.data();
#pragma omp parallel for schedule(static)
    for (int r = 0; r < source_rows_; ++r) interpolate_x(in + int64_t(r) * in_size_.width, rows + int64_t(r) * size.width);
#pragma omp parallel for schedule(static)
    for (int y = 0; y < size.height; ++y)
        interpolate_y(rows + int64_t(y_.first[y]) * size.width, rows + int64_t(y_.second[y]) * size.width, y,
                      out + int64_t(y) * size.width);
}

BilinearRowStream::BilinearRowStream(const BilinearResampler& resampler) : resampler_(resampler) {
    for (Slot& slot : slots_) slot.values.resize(resampler.out_size().width);
}

}  // namespace sqasam::sam
