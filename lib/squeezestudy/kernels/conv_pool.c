/* CPU kernels for the small models' first layers, where torch's own run slowly at this study's sizes
   (squeezestudy.kernels explains when they are used, and how they are built and checked).

   relu_pool:      ReLU then a 2x2, stride-2 max-pool over NHWC (channels_last) fp32 maps, with
                   the window position of each maximum (0-3, raster order) for conv_back_pooled.
   conv_relu_pool: a convolution of one input channel into C <= 8 channels (KxK, K <= 8, stride 1,
                   no padding), its ReLU and that pool, in one pass: the conv's output is never
                   written. Its backward gives the weight and bias gradients (the input's is not
                   needed: it is the image).
   conv_back_pooled: the backward of a convolution of Ci <= 8 channels whose output went through
                   relu_pool: input, weight and bias gradients summed over the pooled maxima alone
                   (a quarter of the positions at most; the gradient is zero at the others).
   conv_pool_back_indexed: the weight and bias gradients of a one-input-channel convolution whose
                   output went through torch's max-pool (its indices) and ReLU, over the maxima alone.

   The rules are torch's: ReLU keeps NaN; a window's maximum is its first in raster order, or its
   last NaN; the gradient goes to that element where the pooled output is not <= 0. Vectors are
   GCC/Clang vector extensions; threads are OpenMP's, the runtime torch itself uses. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CP 8   /* conv_relu_pool's channels, padded to one 8-float vector */
#define KMAX 8

typedef float v8 __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

static inline v8 sel(v8i m, v8 a, v8 b) { return (v8)(((v8i)a & m) | ((v8i)b & ~m)); }
static inline v8i seli(v8i m, v8i a, v8i b) { return (a & m) | (b & ~m); }
static v8 *vectors(long n) {  /* aligned as the vector type needs (malloc gives 16 bytes) */
    return aligned_alloc(sizeof(v8), sizeof(v8) * (size_t)(n > 0 ? n : 1));
}

/* ---- ReLU + 2x2 max-pool, NHWC ---- */

static void relu_pool_rows(const float *restrict x, float *restrict y, uint8_t *restrict idx,
                           const int *restrict off, long rows, long W, long C) {
    const long Q = (W / 2) * C;
    for (long r = 0; r < rows; r++) {
        const float *restrict a = x + 2 * r * W * C, *restrict b = a + W * C;
        float *restrict o = y + r * Q;
        uint8_t *restrict d = idx + r * Q;
        int nan = 0;
        for (long q = 0; q < Q; q++) {
            float v0 = a[off[q]], v1 = a[off[q] + C], v2 = b[off[q]], v3 = b[off[q] + C];
            nan |= (v0 != v0) | (v1 != v1) | (v2 != v2) | (v3 != v3);
            v0 = v0 > 0.f ? v0 : 0.f; v1 = v1 > 0.f ? v1 : 0.f;
            v2 = v2 > 0.f ? v2 : 0.f; v3 = v3 > 0.f ? v3 : 0.f;
            float m01 = v1 > v0 ? v1 : v0, m23 = v3 > v2 ? v3 : v2, m = m23 > m01 ? m23 : m01;
            o[q] = m;
            d[q] = (uint8_t)(v0 == m ? 0 : v1 == m ? 1 : v2 == m ? 2 : 3);
        }
        if (__builtin_expect(nan, 0))  /* the row holds a NaN: torch gives the window's last */
            for (long q = 0; q < Q; q++) {
                const float v[4] = {a[off[q]], a[off[q] + C], b[off[q]], b[off[q] + C]};
                for (int k = 0; k < 4; k++)
                    if (v[k] != v[k]) { o[q] = v[k]; d[q] = (uint8_t)k; }
            }
    }
}

/* x: N x H x W x C; y, idx: N x H/2 x W/2 x C (H, W even). Returns 0, or -1 out of memory. */
int relu_pool(const float *x, float *y, uint8_t *idx, long N, long H, long W, long C, int threads) {
    const long Q = (W / 2) * C, rows = N * (H / 2);
    int *off = malloc(sizeof(int) * (size_t)Q);
    if (!off) return -1;
    for (long q = 0; q < Q; q++) off[q] = (int)(q + (q / C) * C);
    #pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (long t = 0; t < threads; t++) {
        long lo = rows * t / threads, hi = rows * (t + 1) / threads;
        relu_pool_rows(x + 2 * lo * W * C, y + lo * Q, idx + lo * Q, off, hi - lo, W, C);
    }
    free(off);
    return 0;
}

/* ---- one-channel convolution + ReLU + 2x2 max-pool ---- */

static void conv_relu_pool_image(const float *restrict x, const v8 *restrict wv, v8 bias,
                                 float *restrict y, uint8_t *restrict idx, long H, long W, long C, long K) {
    const long Hp = (H - K + 1) / 2, Wp = (W - K + 1) / 2;
    const v8 zero = {0};
    for (long i = 0; i < Hp; i++)
        for (long j = 0; j < Wp; j++) {
            v8 a[4] = {bias, bias, bias, bias};  /* the window's four conv outputs */
            for (long kh = 0; kh < K; kh++) {
                const float *r0 = x + (2 * i + kh) * W + 2 * j, *r1 = r0 + W;
                for (long kw = 0; kw < K; kw++) {
                    const v8 w = wv[kh * K + kw];
                    a[0] += r0[kw] * w; a[1] += r0[kw + 1] * w;
                    a[2] += r1[kw] * w; a[3] += r1[kw + 1] * w;
                }
            }
            v8 m = zero; v8i k = {0};
            for (int p = 0; p < 4; p++) {
                v8i keep = (a[p] > zero) | (a[p] != a[p]);  /* ReLU keeps NaN */
                v8 v = sel(keep, a[p], zero);
                v8i take = p == 0 ? ~(v8i){0} : (v > m) | (v != v);
                m = sel(take, v, m);
                k = seli(take, (v8i){p, p, p, p, p, p, p, p}, k);
            }
            float *o = y + (i * Wp + j) * C;
            uint8_t *d = idx + (i * Wp + j) * C;
            for (long c = 0; c < C; c++) { o[c] = m[c]; d[c] = (uint8_t)k[c]; }
        }
}

/* x: N x H x W; w: C x K x K; b: C; y, idx: N x Hp x Wp x C, Hp = (H-K+1)/2 (H-K+1, W-K+1 even). */
void conv_relu_pool(const float *x, const float *w, const float *b, float *y, uint8_t *idx,
                    long N, long H, long W, long C, long K, int threads) {
    v8 wv[KMAX * KMAX], bias = {0};
    memset(wv, 0, sizeof wv);
    for (long c = 0; c < C; c++) {
        bias[c] = b[c];
        for (long t = 0; t < K * K; t++) wv[t][c] = w[c * K * K + t];
    }
    const long out = ((H - K + 1) / 2) * ((W - K + 1) / 2) * C;
    #pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (long n = 0; n < N; n++)
        conv_relu_pool_image(x + n * H * W, wv, bias, y + n * out, idx + n * out, H, W, C, K);
}

/* Weight and bias gradients; gw: threads x K*K x CP and gb: threads x CP, each thread's partial
   sums over its share of the batch (the caller adds them in order: the same sums every run). */
void conv_relu_pool_back(const float *x, const float *gy, const float *y, const uint8_t *idx,
                         float *gw, float *gb, long N, long H, long W, long C, long K, int threads) {
    const long Hp = (H - K + 1) / 2, Wp = (W - K + 1) / 2;
    #pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (long t = 0; t < threads; t++) {
        const long lo = N * t / threads, hi = N * (t + 1) / threads;
        const v8 zero = {0};
        v8 acc[KMAX * KMAX], accb = zero;
        for (long u = 0; u < K * K; u++) acc[u] = zero;
        for (long n = lo; n < hi; n++) {
            const float *xi = x + n * H * W;
            for (long i = 0; i < Hp; i++)
                for (long j = 0; j < Wp; j++) {
                    const long q = ((n * Hp + i) * Wp + j) * C;
                    v8 g = zero, m = zero; v8i d = {0}, live = {0};
                    for (long c = 0; c < C; c++) { g[c] = gy[q + c]; m[c] = y[q + c]; d[c] = idx[q + c]; live[c] = -1; }
                    g = sel(live & ~(m <= zero), g, zero);  /* ReLU's backward */
                    accb += g;
                    const v8 g0 = sel(d == 0, g, zero), g1 = sel(d == 1, g, zero);
                    const v8 g2 = sel(d == 2, g, zero), g3 = sel(d == 3, g, zero);
                    for (long kh = 0; kh < K; kh++) {
                        const float *r0 = xi + (2 * i + kh) * W + 2 * j, *r1 = r0 + W;
                        for (long kw = 0; kw < K; kw++)
                            acc[kh * K + kw] += g0 * r0[kw] + g1 * r0[kw + 1] + g2 * r1[kw] + g3 * r1[kw + 1];
                    }
                }
        }
        memcpy(gw + t * K * K * CP, acc, sizeof(float) * (size_t)(K * K * CP));
        memcpy(gb + t * CP, &accb, sizeof accb);
    }
}

/* ---- the backward of a convolution (Ci <= 8 input channels, KxK, stride 1, no padding) whose
   output went through relu_pool: its gradient is nonzero only at the pooled maxima, so the input
   and weight gradients are sums over those alone (a quarter of the positions, at most) ---- */

/* x: N x H x W x Ci (channels_last); w: Co x Ci x K x K (torch's layout); gy, y, idx: N x Hp x Wp x
   Co, the pooled gradient, output and window positions (Hp = (H-K+1)/2); gx: N x H x W x Ci, or
   NULL; gw: threads x Co x K*K x CP and gb: threads x Co, partial sums as conv_relu_pool_back's.
   Returns 0, or -1 out of memory. */
int conv_back_pooled(const float *x, const float *w, const float *gy, const float *y, const uint8_t *idx,
                     float *gx, float *gw, float *gb, long N, long H, long W, long Ci, long Co, long K,
                     int threads) {
    const long Hp = (H - K + 1) / 2, Wp = (W - K + 1) / 2, KK = K * K;
    v8 *wv = vectors(Co * KK);
    if (!wv) return -1;
    memset(wv, 0, sizeof(v8) * (size_t)(Co * KK));
    for (long o = 0; o < Co; o++)
        for (long ci = 0; ci < Ci; ci++)
            for (long t = 0; t < KK; t++) wv[o * KK + t][ci] = w[(o * Ci + ci) * KK + t];
    int failed = 0;
    #pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1) reduction(|:failed)
    for (long t = 0; t < threads; t++) {
        const long lo = N * t / threads, hi = N * (t + 1) / threads;
        const v8 zero = {0};
        v8 *acc = vectors(Co * KK);
        v8 *xl = vectors(H * W), *gl = vectors(H * W);
        float *accb = calloc((size_t)Co, sizeof(float));
        if (!acc || !xl || !gl || !accb) { failed = 1; free(acc); free(xl); free(gl); free(accb); continue; }
        for (long u = 0; u < Co * KK; u++) acc[u] = zero;
        for (long n = lo; n < hi; n++) {
            const float *xi = x + n * H * W * Ci;
            for (long p = 0; p < H * W; p++) {  /* the image, one 8-lane vector a pixel */
                xl[p] = zero; gl[p] = zero;
                for (long ci = 0; ci < Ci; ci++) xl[p][ci] = xi[p * Ci + ci];
            }
            for (long i = 0; i < Hp; i++)
                for (long j = 0; j < Wp; j++) {
                    const long q = ((n * Hp + i) * Wp + j) * Co;
                    for (long o = 0; o < Co; o++) {
                        if (y[q + o] <= 0.f) continue;  /* ReLU's backward */
                        const float g = gy[q + o];
                        const long at = (2 * i + (idx[q + o] >> 1)) * W + 2 * j + (idx[q + o] & 1);
                        const v8 *wo = wv + o * KK;
                        v8 *ao = acc + o * KK;
                        accb[o] += g;
                        for (long kh = 0; kh < K; kh++)
                            for (long kw = 0; kw < K; kw++) {
                                const long p = at + kh * W + kw;
                                gl[p] += g * wo[kh * K + kw];
                                ao[kh * K + kw] += g * xl[p];
                            }
                    }
                }
            if (gx) {
                float *go = gx + n * H * W * Ci;
                for (long p = 0; p < H * W; p++)
                    for (long ci = 0; ci < Ci; ci++) go[p * Ci + ci] = gl[p][ci];
            }
        }
        memcpy(gw + t * Co * KK * CP, acc, sizeof(v8) * (size_t)(Co * KK));
        memcpy(gb + t * Co, accb, sizeof(float) * (size_t)Co);
        free(acc); free(xl); free(gl); free(accb);
    }
    free(wv);
    return failed ? -1 : 0;
}

/* ---- the weight and bias gradients of a one-input-channel convolution (KxK, K <= 8, stride S,
   no padding) whose output went through torch's max-pool (any window, its indices) and then ReLU:
   sums over the pooled maxima alone ---- */

/* x: N x H x W; gy, y, ind: N x P x C (channels_last; ind: torch's flat positions in each Ho x Wo
   plane of the conv's output, Wo its width); gw: threads x C x K x CP (each kernel row in a vector,
   its lanes past K junk); gb: threads x C. Returns 0, or -1 out of memory. */
int conv_pool_back_indexed(const float *x, const float *gy, const float *y, const int64_t *ind, float *gw,
                           float *gb, long N, long H, long W, long Wo, long P, long C, long K, long S,
                           int threads) {
    int failed = 0;
    #pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1) reduction(|:failed)
    for (long t = 0; t < threads; t++) {
        const long lo = N * t / threads, hi = N * (t + 1) / threads;
        v8 *acc = vectors(C * K);
        float *accb = calloc((size_t)C, sizeof(float));
        if (!acc || !accb) { failed = 1; free(acc); free(accb); continue; }
        memset(acc, 0, sizeof(v8) * (size_t)(C * K));
        for (long n = lo; n < hi; n++) {
            const float *xi = x + n * H * W;
            for (long p = 0; p < P; p++) {
                const long q = (n * P + p) * C;
                for (long c = 0; c < C; c++) {
                    if (y[q + c] <= 0.f) continue;  /* ReLU's backward */
                    const float g = gy[q + c];
                    const long at = (long)ind[q + c], oh = at / Wo, ow = at % Wo;
                    const float *r = xi + oh * S * W + ow * S;
                    v8 *a = acc + c * K;
                    accb[c] += g;
                    for (long kh = 0; kh < K; kh++) {
                        v8 row = {0};
                        if (ow * S + CP <= W) memcpy(&row, r + kh * W, sizeof row);  /* within the row */
                        else for (long kw = 0; kw < K; kw++) row[kw] = r[kh * W + kw];
                        a[kh] += g * row;
                    }
                }
            }
        }
        memcpy(gw + t * C * K * CP, acc, sizeof(v8) * (size_t)(C * K));
        memcpy(gb + t * C, accb, sizeof(float) * (size_t)C);
        free(acc); free(accb);
    }
    return failed ? -1 : 0;
}
