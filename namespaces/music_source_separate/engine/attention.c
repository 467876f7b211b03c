/* Multi-head attention, softmax(scale * q k^T) v, for heads of 64 dimensions in bf16 with fp32
 * accumulation, on CPUs with AVX512-BF16 dot products (vdpbf16ps).
 *
 * PyTorch's CPU flash attention gains nothing from bf16 on CPUs without AMX tiles; this kernel
 * does the two products with vdpbf16ps at twice the fp32 rate. Each head's keys and values are
 * packed once into the pair layout vdpbf16ps reads; each tile of R query rows then takes its
 * scores against every key (fp32), an exact softmax (max, exp, sum; fp32, probabilities rounded
 * to bf16 as flash attention rounds them) and the weighted sum of values, normalised at the end.
 * A head's packed keys and values (2 x 344 KiB at 2688 keys) stay in a core's L2 cache.
 *
 * Built and loaded by native.py; no Python or PyTorch headers. */
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define D 64
#define PAIRS (D / 2)
#define R 4 /* query rows per register tile: 16 accumulators of 32 registers */

typedef uint16_t bf16;

/* e^x for x <= 0: 2^n * 2^f with f in [-1/2, 1/2], 2^f by its Taylor series to degree 7 (error < 1e-8). */
static inline __m512 exp_nonpositive(__m512 x) {
    x = _mm512_max_ps(_mm512_set1_ps(-87.0f), x); /* a NaN (second operand) stays NaN */
    __m512 t = _mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f));
    __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 f = _mm512_sub_ps(t, n);
    __m512 p = _mm512_set1_ps(1.525273380405984e-05f);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.5403530393381606e-04f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.3333558146428443e-03f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.618129107628477e-03f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.550410866482158e-02f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.402265069591007e-01f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.931471805599453e-01f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

static inline __m512bh pair(const bf16 *at) {
    int32_t bits;
    memcpy(&bits, at, sizeof bits);
    return (__m512bh)_mm512_set1_epi32(bits);
}

/* Keys in groups of 16, each group as 32 pairs of 16 keys x 2 dims: kp[g][p][key][2]. */
static void pack_keys(const bf16 *k, long row_stride, long lk, long padded, bf16 *kp) {
    memset(kp, 0, padded * D * sizeof(bf16));
    for (long j = 0; j < lk; j++)
        for (int p = 0; p < PAIRS; p++) {
            bf16 *to = kp + ((j / 16) * PAIRS + p) * 32 + (j % 16) * 2;
            to[0] = k[j * row_stride + 2 * p];
            to[1] = k[j * row_stride + 2 * p + 1];
        }
}

/* Values in pairs of keys, each as 4 groups of 16 dims x 2 keys: vp[j/2][d/16][d%16][j%2]. */
static void pack_values(const bf16 *v, long row_stride, long lk, long padded, bf16 *vp) {
    memset(vp, 0, padded * D * sizeof(bf16));
    for (long j = 0; j < lk; j++)
        for (int d = 0; d < D; d++)
            vp[((j / 2) * 4 + d / 16) * 32 + (d % 16) * 2 + (j % 2)] = v[j * row_stride + d];
}

/* Scores of R query rows (q: R x D, contiguous) against every padded key. */
static void scores(const bf16 *q, const bf16 *kp, long groups, float *s, long ld) {
    long g = 0;
    for (; g + 4 <= groups; g += 4) {
        __m512 acc[R][4];
        for (int r = 0; r < R; r++)
            for (int c = 0; c < 4; c++) acc[r][c] = _mm512_setzero_ps();
        for (int p = 0; p < PAIRS; p++) {
            __m512bh kz[4];
            for (int c = 0; c < 4; c++)
                kz[c] = (__m512bh)_mm512_loadu_si512(kp + ((g + c) * PAIRS + p) * 32);
            for (int r = 0; r < R; r++) {
                __m512bh qb = pair(q + r * D + 2 * p);
                for (int c = 0; c < 4; c++) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], qb, kz[c]);
            }
        }
        for (int r = 0; r < R; r++)
            for (int c = 0; c < 4; c++) _mm512_storeu_ps(s + r * ld + (g + c) * 16, acc[r][c]);
    }
    for (; g < groups; g++) {
        __m512 acc[R];
        for (int r = 0; r < R; r++) acc[r] = _mm512_setzero_ps();
        for (int p = 0; p < PAIRS; p++) {
            __m512bh kz = (__m512bh)_mm512_loadu_si512(kp + (g * PAIRS + p) * 32);
            for (int r = 0; r < R; r++) acc[r] = _mm512_dpbf16_ps(acc[r], pair(q + r * D + 2 * p), kz);
        }
        for (int r = 0; r < R; r++) _mm512_storeu_ps(s + r * ld + g * 16, acc[r]);
    }
}

/* The lanes of keys j .. j + 15 that exist (are below lk). */
static inline __mmask16 real_keys(long j, long lk) {
    return j + 16 <= lk ? 0xFFFF : (j >= lk ? 0 : (__mmask16)((1u << (lk - j)) - 1));
}

/* p = exp(scale * (s - max)) as bf16, zero past lk; returns the sum of the fp32 exponentials. */
static float softmax_row(const float *s, long lk, long padded, float scale, bf16 *p) {
    __m512 top = _mm512_set1_ps(-3.0e38f);
    for (long j = 0; j < padded; j += 16)
        top = _mm512_mask_max_ps(top, real_keys(j, lk), top, _mm512_loadu_ps(s + j));
    __m512 shift = _mm512_set1_ps(_mm512_reduce_max_ps(top));
    __m512 scaled = _mm512_set1_ps(scale);
    __m512 total = _mm512_setzero_ps();
    for (long j = 0; j < padded; j += 16) {
        __m512 e = exp_nonpositive(_mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(s + j), shift), scaled));
        e = _mm512_maskz_mov_ps(real_keys(j, lk), e);
        total = _mm512_add_ps(total, e);
        _mm256_storeu_si256((__m256i *)(p + j), (__m256i)_mm512_cvtneps_pbh(e));
    }
    return _mm512_reduce_add_ps(total);
}

/* out rows = (p @ v) / sum for R rows; only `rows` of them are written. */
static void weighted(const bf16 *p, long ld, const bf16 *vp, long padded, const float *sum,
                     bf16 *out, long out_stride, int rows) {
    __m512 acc[R][4];
    for (int r = 0; r < R; r++)
        for (int c = 0; c < 4; c++) acc[r][c] = _mm512_setzero_ps();
    for (long j2 = 0; j2 < padded / 2; j2++) {
        __m512bh vz[4];
        for (int c = 0; c < 4; c++) vz[c] = (__m512bh)_mm512_loadu_si512(vp + (j2 * 4 + c) * 32);
        for (int r = 0; r < R; r++) {
            __m512bh pb = pair(p + r * ld + 2 * j2);
            for (int c = 0; c < 4; c++) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], pb, vz[c]);
        }
    }
    for (int r = 0; r < rows; r++) {
        __m512 inv = _mm512_set1_ps(1.0f / sum[r]);
        for (int c = 0; c < 4; c++)
            _mm256_storeu_si256((__m256i *)(out + r * out_stride + c * 16),
                                (__m256i)_mm512_cvtneps_pbh(_mm512_mul_ps(acc[r][c], inv)));
    }
}

/* Every head of the flattened (batch, head) index, spread over `threads` OpenMP threads (the
 * runtime PyTorch already loaded, so its threads do this work instead of spinning beside it).
 * Strides are in elements: [batch, head, row] for each of q, k, v and out; the dimension stride
 * is 1. Returns 0, or -1 where a thread could not allocate its buffers. */
int attend(const bf16 *q, const bf16 *k, const bf16 *v, bf16 *out, long heads, long lq, long lk,
           const long *qs, const long *ks, const long *vs, const long *os, long total, int threads,
           float scale) {
    long padded = (lk + 15) / 16 * 16;
    int failed = 0;
#pragma omp parallel num_threads(threads) reduction(| : failed)
    {
        bf16 *kp = aligned_alloc(64, padded * D * sizeof(bf16));
        bf16 *vp = aligned_alloc(64, padded * D * sizeof(bf16));
        float *s = aligned_alloc(64, R * padded * sizeof(float));
        bf16 *p = aligned_alloc(64, R * padded * sizeof(bf16));
        bf16 qtile[R * D] __attribute__((aligned(64)));
        float sum[R];
        failed = !kp || !vp || !s || !p;
#pragma omp for schedule(static)
        for (long index = 0; index < total; index++) {
            if (failed) continue;
            long b = index / heads, h = index % heads;
            const bf16 *qh = q + b * qs[0] + h * qs[1];
            bf16 *oh = out + b * os[0] + h * os[1];
            pack_keys(k + b * ks[0] + h * ks[1], ks[2], lk, padded, kp);
            pack_values(v + b * vs[0] + h * vs[1], vs[2], lk, padded, vp);
            for (long row = 0; row < lq; row += R) {
                int rows = lq - row < R ? (int)(lq - row) : R;
                memset(qtile, 0, sizeof qtile);
                for (int r = 0; r < rows; r++) memcpy(qtile + r * D, qh + (row + r) * qs[2], D * sizeof(bf16));
                scores(qtile, kp, padded / 16, s, padded);
                for (int r = 0; r < R; r++) sum[r] = softmax_row(s + r * padded, lk, padded, scale, p + r * padded);
                weighted(p, padded, vp, padded, sum, oh + row * os[2], os[2], rows);
            }
        }
        free(kp); free(vp); free(s); free(p);
    }
    return failed ? -1 : 0;
}
