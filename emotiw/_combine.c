/* The combiner's C code (emotiw/combine.py builds it once per machine with the system compiler, flags in _build:
   -O3 -march=native -ffp-contract=off -fno-math-errno, and calls it through ctypes): the chunk scorer of the
   RandomSearchCombiner, a copy of torch's CPU generator, and the whole search of _FastSearch. Every float operation
   that decides a count is the one the torch scorers do, in the same order: results are bit for bit theirs. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#if defined(__AVX__)
#include <immintrin.h>
#endif
/* GCC/clang vector extensions: 8 clips per vector, portable to any target the compiler knows */
typedef float vf __attribute__((vector_size(32)));
typedef int32_t vi __attribute__((vector_size(32)));
typedef int32_t viu __attribute__((vector_size(32), aligned(4)));
typedef float vfu __attribute__((vector_size(32), aligned(4)));
typedef int64_t vlu __attribute__((vector_size(64), aligned(8)));
#define KB 6
/* complete clips (N a multiple of 8, padding clips labelled -1): KB candidates at a time share every load of P;
   running argmax over classes with strict > (the lowest class wins a tie), then compare with the label */
#define KERNEL(M) \
static void correct_m##M(const float *w, int64_t K, int64_t C, const float *p, const int64_t *y, int64_t N, \
                         int32_t *out, int64_t k0, int64_t k1, int64_t n_real, int64_t limit) { \
    int64_t k = k0; \
    for (; k < k1; k += KB) { \
        const int nq = k1 - k < KB ? (int)(k1 - k) : KB; \
        vi count[KB]; int aborted = 0; \
        for (int q = 0; q < KB; ++q) count[q] = (vi){0}; \
        for (int64_t n = 0; n < N; n += 8) { \
            vf best[KB]; vi idx[KB]; \
            for (int q = 0; q < KB; ++q) { best[q] = (vf){0} - INFINITY; idx[q] = (vi){0}; } \
            for (int64_t c = 0; c < C; ++c) { \
                vf pj[M]; \
                for (int j = 0; j < M; ++j) pj[j] = *(const vfu *)(p + (c * M + j) * N + n); \
                const float *wc = w + (c * K + k) * M; \
                for (int q = 0; q < KB; ++q) { \
                    const int qq = q < nq ? q : 0; \
                    vf v = wc[qq * M] * pj[0]; \
                    for (int j = 1; j < M; ++j) v = v + wc[qq * M + j] * pj[j]; \
                    const vi gt = v > best[q]; \
                    best[q] = (vf)(((vi)v & gt) | ((vi)best[q] & ~gt)); \
                    idx[q] = (((vi){0} + (int32_t)c) & gt) | (idx[q] & ~gt); \
                } \
            } \
            const vlu y8 = *(const vlu *)(y + n); \
            vi yv; \
            for (int i = 0; i < 8; ++i) yv[i] = (int32_t)y8[i]; \
            for (int q = 0; q < KB; ++q) count[q] -= idx[q] == yv; \
            if ((n & 24) == 24 && n + 8 < n_real) { /* every 32 clips: stop when no candidate can reach the bar */ \
                const int64_t seen = n + 8; \
                int hopeless = 1; \
                for (int q = 0; q < nq && hopeless; ++q) { \
                    int32_t s = 0; \
                    for (int i = 0; i < 8; ++i) s += count[q][i]; \
                    hopeless = seen - s >= limit; \
                } \
                if (hopeless) { aborted = 1; break; } \
            } \
        } \
        for (int q = 0; q < nq; ++q) { \
            int32_t s = 0; \
            for (int i = 0; i < 8; ++i) s += count[q][i]; \
            out[k + q] = aborted ? -1 : s; \
        } \
    } \
}
KERNEL(1) KERNEL(2) KERNEL(3) KERNEL(4) KERNEL(5) KERNEL(6) KERNEL(7) KERNEL(8)

/* clips missing some model: each class score renormalised over the models present (mask, M x N) */
static void correct_masked(const float *w, int64_t K, int64_t C, int64_t M, const float *p, const int64_t *y,
                           int64_t N, const float *mask, int32_t *out, int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) {
        int32_t count = 0;
        for (int64_t n = 0; n < N; ++n) {
            float best = -INFINITY; int32_t arg = 0;
            for (int64_t c = 0; c < C; ++c) {
                const float *wc = w + (c * K + k) * M;
                const float *pc = p + c * M * N + n;
                float v = wc[0] * pc[0], d = wc[0] * mask[n];
                for (int64_t j = 1; j < M; ++j) { v = v + wc[j] * pc[j * N]; d = d + wc[j] * mask[j * N + n]; }
                v = v / (d > 1e-12f ? d : 1e-12f);
                if (v > best) { best = v; arg = (int32_t)c; }
            }
            count += arg == y[n];
        }
        out[k] = count;
    }
}

/* candidates k0..k1 of raw draws w (C, K, M), in place, as ``normalise_columns`` does in torch: with a centre
   (C x M), w = max(w * sigma + centre, 0) first; each column is divided by its sum; a column summing to <= 1e-12
   takes the centre's column (or equal weights without a centre) */
void prepare(float *w, int64_t K, int64_t C, int64_t M, const float *centre, float sigma, int64_t k0, int64_t k1) {
    const float equal = (float)(1.0 / (double)M);
    for (int64_t c = 0; c < C; ++c) {
        for (int64_t k = k0; k < k1; ++k) {
            float *wc = w + (c * K + k) * M;
            if (centre) {
                for (int64_t j = 0; j < M; ++j) {
                    const float v = wc[j] * sigma + centre[c * M + j];
                    wc[j] = v > 0.0f ? v : 0.0f;
                }
            }
            float total = wc[0];
            for (int64_t j = 1; j < M; ++j) total = total + wc[j];
            if (total <= 1e-12f) {
                for (int64_t j = 0; j < M; ++j) wc[j] = centre ? centre[c * M + j] : equal;
            } else {
                for (int64_t j = 0; j < M; ++j) wc[j] = wc[j] / total;
            }
        }
    }
}

/* counts of correct clips per candidate k0..k1 (out); complete clips (no mask) may stop early: a candidate block
   whose every member has at least `limit` wrong among the first n_real (unpadded) clips cannot reach the caller's
   bar and gets -1 */
int correct_counts(const float *w, int64_t K, int64_t C, int64_t M, const float *p, const int64_t *y, int64_t N,
                   const float *mask, int32_t *out, int64_t k0, int64_t k1, int64_t n_real, int64_t limit) {
    if (mask) { correct_masked(w, K, C, M, p, y, N, mask, out, k0, k1); return 0; }
    switch (M) {
    case 1: correct_m1(w, K, C, p, y, N, out, k0, k1, n_real, limit); return 0;
    case 2: correct_m2(w, K, C, p, y, N, out, k0, k1, n_real, limit); return 0;
    case 3: correct_m3(w, K, C, p, y, N, out, k0, k1, n_real, limit); return 0;
    case 4: correct_m4(w, K, C, p, y, N, out, k0, k1, n_real, limit); return 0;
    case 5: correct_m5(w, K, C, p, y, N, out, k0, k1, n_real, limit); return 0;
    case 6: correct_m6(w, K, C, p, y, N, out, k0, k1, n_real, limit); return 0;
    case 7: correct_m7(w, K, C, p, y, N, out, k0, k1, n_real, limit); return 0;
    case 8: correct_m8(w, K, C, p, y, N, out, k0, k1, n_real, limit); return 0;
    default: return 1;
    }
}

/* ---------------------------------------------------------------------------------------------------------------
   The search's random stream without torch: torch's CPU generator (a 32-bit Mersenne twister seeded as
   std::mt19937), its float32 uniforms (low 24 bits * 2^-24) and its normals (AVX2 Box-Muller on blocks of 16:
   u1 = 1 - u[0..7], u2 = u[8..15]; a size that is not a multiple of 16 redraws the last 16). Python checks at load
   that these reproduce torch.rand / torch.randn bit for bit and otherwise keeps drawing with torch. */
typedef uint32_t vu __attribute__((vector_size(32)));
typedef double vd __attribute__((vector_size(32)));
typedef int64_t vl __attribute__((vector_size(32)));
typedef struct { uint32_t s[624]; int32_t left, next; } mt_t;

void mt_seed(mt_t *g, uint64_t seed) {
    g->s[0] = (uint32_t)seed;
    for (int j = 1; j < 624; ++j) g->s[j] = 1812433253u * (g->s[j - 1] ^ (g->s[j - 1] >> 30)) + (uint32_t)j;
    g->left = 1; g->next = 0;
}
static inline uint32_t mt_mix(uint32_t u, uint32_t v) {
    return (((u & 0x80000000u) | (v & 0x7fffffffu)) >> 1) ^ ((v & 1u) ? 0x9908b0dfu : 0u);
}
static void mt_twist(mt_t *g) {
    uint32_t *s = g->s;
    int i = 0;
    for (; i < 227; ++i) s[i] = s[i + 397] ^ mt_mix(s[i], s[i + 1]);
    for (; i < 623; ++i) s[i] = s[i - 227] ^ mt_mix(s[i], s[i + 1]);
    s[623] = s[396] ^ mt_mix(s[623], s[0]);
    g->left = 624; g->next = 0;
}
static inline uint32_t mt_temper(uint32_t y) {
    y ^= y >> 11; y ^= (y << 7) & 0x9d2c5680u; y ^= (y << 15) & 0xefc60000u; return y ^ (y >> 18);
}
/* torch.rand(n) (float32) */
void mt_uniform(mt_t *g, float *out, int64_t n) {
    int64_t i = 0;
    while (i < n) {
        if (--g->left == 0) mt_twist(g);
        const int64_t avail = 624 - g->next, take = n - i < avail ? n - i : avail; /* before the next twist */
        const uint32_t *s = g->s + g->next;
        for (int64_t j = 0; j < take; ++j) out[i + j] = (float)(mt_temper(s[j]) & 0xffffffu) * (1.0f / 16777216.0f);
        g->next += (int32_t)take; g->left -= (int32_t)(take - 1);
        i += take;
    }
}
/* Cephes-style float logarithm and sine/cosine with the operations of torch's vectorised versions: each fused
   multiply-add below is one that torch's build fuses, every other operation rounds on its own (the file is built
   with -ffp-contract=off) */
#if defined(__FMA__)
static inline vf fma8(vf a, vf b, vf c) { return (vf)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c); }
#else
static inline vf fma8(vf a, vf b, vf c) { vf r; for (int i = 0; i < 8; ++i) r[i] = fmaf(a[i], b[i], c[i]); return r; }
#endif
static inline vf vb(float x) { return (vf){0} + x; }
static inline vf vsel(vi m, vf a, vf b) { return (vf)(((vi)a & m) | ((vi)b & ~m)); }
/* v > b ? v : b (the scorer's running maximum; no NaN reaches it) */
#if defined(__AVX__)
static inline vf vmax(vf v, vf b) { return (vf)_mm256_max_ps((__m256)v, (__m256)b); }
#else
static inline vf vmax(vf v, vf b) { return vsel(v > b, v, b); }
#endif
/* the lanes set in a mask (all bits or none per lane): a scalar count keeps the loop's check off the vector unit */
static inline int64_t count8(vi m) {
#if defined(__AVX__)
    return __builtin_popcount((unsigned)_mm256_movemask_ps((__m256)m));
#else
    int64_t s = 0;
    for (int i = 0; i < 8; ++i) s -= m[i];
    return s;
#endif
}
/* the sum of the 8 lanes */
static inline int32_t hsum8(vi v) {
#if defined(__AVX2__)
    __m128i x = _mm_add_epi32(_mm256_castsi256_si128((__m256i)v), _mm256_extracti128_si256((__m256i)v, 1));
    x = _mm_add_epi32(x, _mm_shuffle_epi32(x, 0x4e));
    x = _mm_add_epi32(x, _mm_shuffle_epi32(x, 0xb1));
    return _mm_cvtsi128_si32(x);
#else
    int32_t s = 0;
    for (int i = 0; i < 8; ++i) s += v[i];
    return s;
#endif
}
static inline vf vlog(vf x) {
    const vi bad = x <= 0.0f;
    x = vsel(x < 1.17549435e-38f, vb(1.17549435e-38f), x);
    const vi ex = (vi)((vu)x >> 23) - 0x7f;
    x = (vf)(((vi)x & (int32_t)~0x7f800000) | (vi)vb(0.5f)); /* mantissa in [0.5, 1) */
    vf e = __builtin_convertvector(ex, vf) + 1.0f;
    const vi small = x < 0.707106781186547524f;
    const vf tmp = (vf)((vi)x & small);
    x = x - 1.0f;
    e = e - (vf)((vi)vb(1.0f) & small);
    x = x + tmp;
    const vf z = x * x;
    vf y = vb(7.0376836292E-2f);
    y = fma8(y, x, vb(-1.1514610310E-1f));
    y = fma8(y, x, vb(1.1676998740E-1f));
    y = fma8(y, x, vb(-1.2420140846E-1f));
    y = fma8(y, x, vb(1.4249322787E-1f));
    y = fma8(y, x, vb(-1.6668057665E-1f));
    y = fma8(y, x, vb(2.0000714765E-1f));
    y = fma8(y, x, vb(-2.4999993993E-1f));
    y = fma8(y, x, vb(3.3333331174E-1f));
    y = y * x;
    y = fma8(y, z, e * -2.12194440e-4f);
    y = fma8(-z, vb(0.5f), y);
    x = fma8(e, vb(0.693359375f), x + y);
    return (vf)((vi)x | bad);
}
static inline void vsincos(vf x, vf *sn, vf *cs) {
    const int32_t signbit = (int32_t)0x80000000;
    vi sign_sin = (vi)x & signbit;
    x = (vf)((vi)x & ~signbit);
    vi j = __builtin_convertvector(x * 1.27323954473516f, vi); /* octant */
    j = (j + 1) & ~1;
    const vf y = __builtin_convertvector(j, vf);
    const vi poly = (j & 2) == 0;
    sign_sin = sign_sin ^ ((j & 4) << 29);
    const vi sign_cos = (~(j - 2) & 4) << 29;
    x = fma8(y, vb(-0.78515625f), x); /* x - y * pi/4 in three parts */
    x = fma8(y, vb(-2.4187564849853515625e-4f), x);
    x = fma8(y, vb(-3.77489497744594108e-8f), x);
    const vf z = x * x;
    vf c = vb(2.443315711809948E-005f);
    c = fma8(c, z, vb(-1.388731625493765E-003f));
    c = fma8(c, z, vb(4.166664568298827E-002f));
    c = c * z;
    c = fma8(c, z, -(z * 0.5f));
    c = c + 1.0f;
    vf s = vb(-1.9515295891E-4f);
    s = fma8(s, z, vb(8.3321608736E-3f));
    s = fma8(s, z, vb(-1.6666654611E-1f));
    s = s * z;
    s = fma8(s, x, x);
    *sn = (vf)((vi)vsel(poly, s, c) ^ sign_sin);
    *cs = (vf)((vi)vsel(poly, c, s) ^ sign_cos);
}
static inline void box_muller16(float *d) {
    const vf u1 = 1.0f - *(const vfu *)d, u2 = *(const vfu *)(d + 8);
    const vf r2 = -2.0f * vlog(u1);
    vf radius;
    for (int i = 0; i < 8; ++i) radius[i] = __builtin_sqrtf(r2[i]);
    vf sn, cs;
    vsincos(6.28318548202514648f * u2, &sn, &cs);
    *(vfu *)d = radius * cs;
    *(vfu *)(d + 8) = radius * sn;
}
/* torch.randn(n) (float32, contiguous); torch draws fewer than 16 values another way: refused */
int mt_normal(mt_t *g, float *out, int64_t n) {
    if (n < 16) return 1;
    mt_uniform(g, out, n);
    for (int64_t i = 0; i + 16 <= n; i += 16) box_muller16(out + i);
    if (n % 16) { mt_uniform(g, out + n - 16, 16); box_muller16(out + n - 16); }
    return 0;
}

/* ---------------------------------------------------------------------------------------------------------------
   One round of the search over candidates k0..k1, with the bar from the best so far (strict >):
   - the candidate's raw draws z (C x M) are gathered from the round's chunks (each chunk (C, k, M), as torch drew it);
   - local rounds bound how far it can move every class score from the centre's: with |v - centre| <= d per weight
     (d = sigma max|z| plus rounding) and S = column sum >= T - M d, |score - mu| <= d sum_m |P_m - mu| / S, so a
     clip whose threshold theta (the centre's margin over that spread, Python computes and sorts them ascending)
     exceeds e = d / (T - M d) keeps the centre's prediction: only the first u clips are scored, the others add
     their known correctness (safe_suffix);
   - a clip the centre gets wrong can turn right only where e >= phi (its true class's gap over that spread, phi
     sorted ascending): a candidate whose e is below the phi it would need to beat the bar (right_total clips the
     centre gets right, all masked clips, and the wrong clips with phi <= e) is skipped before its weights are made;
     so is one that cannot beat the bar even if every scored clip were right; one that has lost too many clips
     stops early; a candidate that must score most clips scores them all in the order pf / yf instead (the clips the
     centre gets wrong first, so that a candidate no better than the centre shows it soon);
   - the running best of every thread is shared: a later thread's candidate must beat an earlier thread's best,
     an earlier thread's candidate must reach a later thread's best (it comes first, so it wins a tie). */
typedef struct {
    const float *z; int64_t K, chunk, C, M;
    const float *centre; float sigma; double t_min;
    const float *p; const int32_t *y; int64_t n_pad, n_real;
    const float *pf; const int32_t *yf;
    const double *theta; const int32_t *safe_suffix;
    const double *phi; int64_t n_phi, right_total;
    const float *pm; const int64_t *ym; const float *mask; int64_t n_masked;
    int32_t *bests; int64_t n_threads;
    int64_t *stats; /* per thread: candidates skipped before their weights were made, scored, clips scored */
    int64_t z_chunk0; /* z holds the chunks from this one on */
    /* optional (C <= 8): the clip orders p / pf as pairs (label, strongest other class), see pair_arrays */
    const float *pair_p, *pair_pf; const int32_t *pair_i, *pair_if;
    /* optional: per candidate of the chunk z holds (z_chunk0 only), the max |z| of its draws (run_round) */
    const float *zmax;
} scan_t;

/* The cheap half of a hopeless candidate's proof: a complete clip is wrong as soon as one other class t scores at
   least as much as the label y (more, where t > y: the lowest class wins a tie). Scoring only y and each clip's
   strongest rival t (per_p: (2, M, n_pad) probabilities of y then t; pair_i: (3, n_pad) y, t, -1 where t < y) with
   the very float operations of eval_m (a weight per lane per class, permuted to each clip's class) gives a lower
   bound of the wrong clips; a candidate with more than slack of them cannot beat the bar (1). 0: not shown.
   Both scores are sums of products of non-negative floats, never -0 (the table turns -0 inputs into +0), so they
   order as their bits do as integers: "t wins" is bits(t) + 1 > bits(y) where t < y, else bits(t) > bits(y).
   Kept out of line (like eval_m): inlined in scan_round, the eight copies of each crowd its registers. */
#if defined(__AVX2__)
static inline vf vperm(vf w, vi i) { return (vf)_mm256_permutevar8x32_ps((__m256)w, (__m256i)i); }
#else
static inline vf vperm(vf w, vi i) { vf r; for (int l = 0; l < 8; ++l) r[l] = w[i[l] & 7]; return r; }
#endif
#define PAIR_EVAL(M) \
__attribute__((noinline)) static int hopeless_m##M(const float *w, const float *pp, const int32_t *pi, int64_t n_pad, int64_t u8, \
                         int64_t slack) { \
    vf wv[M]; \
    for (int j = 0; j < M; ++j) wv[j] = *(const vf *)(w + 8 * j); \
    const float *py = pp, *pt = pp + M * n_pad; \
    const int32_t *yi = pi, *ti = pi + n_pad, *lo = pi + 2 * n_pad; \
    int64_t wrong = 0; \
    for (int64_t n = 0; n < u8; n += 8) { \
        const vi yv = *(const viu *)(yi + n), tv = *(const viu *)(ti + n), lv = *(const viu *)(lo + n); \
        vf vy = vperm(wv[0], yv) * *(const vfu *)(py + n), vt = vperm(wv[0], tv) * *(const vfu *)(pt + n); \
        for (int j = 1; j < M; ++j) { \
            vy = vy + vperm(wv[j], yv) * *(const vfu *)(py + j * n_pad + n); \
            vt = vt + vperm(wv[j], tv) * *(const vfu *)(pt + j * n_pad + n); \
        } \
        wrong += count8(((vi)vt - lv) > (vi)vy); /* lv: -1 where t < y */ \
        if (wrong > slack) return 1; \
    } \
    return 0; \
}
PAIR_EVAL(1) PAIR_EVAL(2) PAIR_EVAL(3) PAIR_EVAL(4) PAIR_EVAL(5) PAIR_EVAL(6) PAIR_EVAL(7) PAIR_EVAL(8)

/* For clips p (C, M, n_pad), y (-1: padding) in some order: each clip's probabilities of its label and of its
   strongest other class under centre (C x M; NULL: equal weights), as hopeless_m reads them */
void pair_arrays(const float *p, const int32_t *y, int64_t n_pad, int64_t C, int64_t M, const float *centre,
                 float *pp, int32_t *pi) {
    for (int64_t n = 0; n < n_pad; ++n) {
        int64_t yc = y[n], t = 0;
        if (yc < 0) {
            yc = 0;
        } else {
            double best = -INFINITY;
            for (int64_t c = 0; c < C; ++c) {
                if (c == yc) continue;
                double s = 0.0;
                for (int64_t m = 0; m < M; ++m) s += (centre ? (double)centre[c * M + m] : 1.0) * (double)p[(c * M + m) * n_pad + n];
                if (s > best) { best = s; t = c; }
            }
        }
        if (y[n] < 0) t = 0;
        for (int64_t m = 0; m < M; ++m) {
            pp[m * n_pad + n] = p[(yc * M + m) * n_pad + n];
            pp[(M + m) * n_pad + n] = p[(t * M + m) * n_pad + n];
        }
        pi[n] = (int32_t)yc; pi[n_pad + n] = (int32_t)t; pi[2 * n_pad + n] = t < yc ? -1 : 0;
    }
}

#define SCAN_EVAL(M) \
__attribute__((noinline)) static int32_t eval_m##M(const float *w, int64_t cs, int64_t ms, int64_t C, const float *p, const int32_t *y, \
                         int64_t n_pad, int64_t u8, int64_t n_real, int64_t slack) { \
    vi count = (vi){0}; \
    int64_t n = 0; \
    for (; n + 16 <= u8; n += 16) { /* two blocks of 8 clips share every weight broadcast */ \
        vf b0 = (vf){0} - INFINITY, b1 = b0; vi i0 = (vi){0}, i1 = i0, cv = i0; \
        for (int64_t c = 0; c < C; ++c, cv += 1) { \
            const float *pc = p + c * M * n_pad + n, *wc = w + c * cs; \
            vf v0 = wc[0] * *(const vfu *)pc, v1 = wc[0] * *(const vfu *)(pc + 8); \
            for (int j = 1; j < M; ++j) { \
                const float wj = wc[j * ms]; \
                v0 = v0 + wj * *(const vfu *)(pc + j * n_pad); \
                v1 = v1 + wj * *(const vfu *)(pc + j * n_pad + 8); \
            } \
            const vi g0 = v0 > b0, g1 = v1 > b1; \
            b0 = vmax(v0, b0); b1 = vmax(v1, b1); \
            i0 = (cv & g0) | (i0 & ~g0); i1 = (cv & g1) | (i1 & ~g1); \
        } \
        count -= i0 == *(const viu *)(y + n); \
        count -= i1 == *(const viu *)(y + n + 8); \
        /* every 16 clips: stop once more than slack real clips are wrong */ \
        if (n + 16 < u8 && (n + 16 < n_real ? n + 16 : n_real) - hsum8(count) > slack) return -1; \
    } \
    if (n < u8) { \
        vf best = (vf){0} - INFINITY; vi idx = (vi){0}, cv = (vi){0}; \
        for (int64_t c = 0; c < C; ++c, cv += 1) { \
            const float *pc = p + c * M * n_pad + n, *wc = w + c * cs; \
            vf v = wc[0] * *(const vfu *)pc; \
            for (int j = 1; j < M; ++j) v = v + wc[j * ms] * *(const vfu *)(pc + j * n_pad); \
            const vi gt = v > best; \
            best = vmax(v, best); \
            idx = (cv & gt) | (idx & ~gt); \
        } \
        count -= idx == *(const viu *)(y + n); \
    } \
    return hsum8(count); \
}
SCAN_EVAL(1) SCAN_EVAL(2) SCAN_EVAL(3) SCAN_EVAL(4) SCAN_EVAL(5) SCAN_EVAL(6) SCAN_EVAL(7) SCAN_EVAL(8)

static int32_t eval_masked(const float *w, int64_t cs, int64_t ms, int64_t C, int64_t M, const float *p,
                           const int64_t *y, int64_t N, const float *mask) {
    int32_t count = 0;
    for (int64_t n = 0; n < N; ++n) {
        float best = -INFINITY; int32_t arg = 0;
        for (int64_t c = 0; c < C; ++c) {
            const float *pc = p + c * M * N + n, *wc = w + c * cs;
            float v = wc[0] * pc[0], d = wc[0] * mask[n];
            for (int64_t j = 1; j < M; ++j) { v = v + wc[j * ms] * pc[j * N]; d = d + wc[j * ms] * mask[j * N + n]; }
            v = v / (d > 1e-12f ? d : 1e-12f);
            if (v > best) { best = v; arg = (int32_t)c; }
        }
        count += arg == y[n];
    }
    return count;
}

/* A local round's candidate with max |z| < skip_below(bar) is skipped by the test in scan_round below (which
   takes d = sigma max|z| (1 + 1e-6) + 2.5e-7 and needs T - M d > T / 2 and, for the q-th phi, d / (T - M d) <
   phi_q): so most candidates are settled on their first draws, without gathering them. The limit is solved for
   max|z| with a relative 1e-9 to spare, far above double rounding; 0 where nothing can be skipped so. */
static double skip_below(const scan_t *a, int32_t bar) {
    const double t_min = a->t_min, M = (double)a->M;
    const int64_t q = (int64_t)bar - a->right_total - a->n_masked;
    double d_lim = 0.5 * t_min / M;
    if (q < 0) return 0.0;
    if (q < a->n_phi) {
        const double phi = a->phi[q];
        if (!(phi > 0.0)) return 0.0;
        if (phi < INFINITY) { const double dp = phi * t_min / (1.0 + M * phi); if (dp < d_lim) d_lim = dp; }
    }
    const double z = (d_lim * (1.0 - 1e-9) - 2.5e-7) / ((double)a->sigma * (1.0 + 1e-6)) * (1.0 - 1e-9);
    return z > 0.0 ? z : 0.0;
}
/* A candidate's draws (class rows `row` floats apart from first, M each) as a vector per model, a lane per class
   (lanes C.. zero): with AVX a row of 8 floats per class (its M, then the next candidate's: the buffers end 8 floats
   late), transposed */
static inline void lanes_of(const float *first, int64_t row, int64_t C, int64_t M, float *z) {
#if defined(__AVX__)
    __m256 r[8];
    for (int c = 0; c < 8; ++c) r[c] = c < C ? _mm256_loadu_ps(first + c * row) : _mm256_setzero_ps();
    const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xee);
    const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xee);
    const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xee);
    const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xee);
    __m256 *zv = (__m256 *)z;
    zv[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
    if (M > 1) zv[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    if (M > 2) zv[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
    if (M > 3) zv[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    if (M > 4) zv[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
    if (M > 5) zv[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    if (M > 6) zv[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
    if (M > 7) zv[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
#else
    for (int64_t c = 0; c < C; ++c)
        for (int64_t m = 0; m < M; ++m) z[8 * m + c] = first[c * row + m];
#endif
}

/* (scan_round below: this body compiled once for each number of models of the paper's subsets, 2 to 5, so that
   its loops over the models unroll: 8 % faster; and once for any number) */
static inline __attribute__((always_inline)) void scan_round_as(const scan_t *a, int64_t t, int64_t k0, int64_t k1,
                                                                int32_t bar0, int32_t *out_count, int64_t *out_k,
                                                                float *out_w, const int64_t M) {
    const int64_t C = a->C, CM = C * M;
    /* up to 8 classes: one vector per model, a lane per class (weights at w[m * 8 + c]); else w[c * M + m] */
    const int lanes = C <= 8;
    const int64_t cs = lanes ? 1 : M, ms = lanes ? 8 : 1;
    float za[CM > 64 ? CM : 64] __attribute__((aligned(32))), zb[64] __attribute__((aligned(32)));
    float w[CM > 64 ? CM : 64] __attribute__((aligned(32)));
    float *z = za, *zn = zb; /* the candidate's draws; the next one's, loaded ahead (lanes only) */
    int64_t next_k = -1;
    vf cen[8], fb[8];
    for (int i = 0; i < 64; ++i) za[i] = zb[i] = w[i] = 0.0f;
    /* every 8th theta, padded with +inf to whole vectors: a short table counts those <= e in a few compares */
    const int64_t nb = (a->n_real + 7) / 8, nb4 = (nb + 3) & ~(int64_t)3;
    double *th8 = a->theta && nb <= 256 ? aligned_alloc(32, sizeof(double) * (size_t)(nb4 > 0 ? nb4 : 4)) : NULL;
    if (th8) for (int64_t i = 0; i < nb4; ++i) th8[i] = i < nb ? a->theta[8 * i] : INFINITY;
    int32_t own = bar0; int64_t own_k = -1;
    int64_t n_skipped = 0, n_scored = 0, n_clips = 0, n_paired = 0, pair_tried = 0, pair_left = 0;
    int32_t quick_bar = -1; float quick = 0.0f; /* skip_below(quick_bar), rounded down to a float */
    /* from max|z| = far on, T - M d <= T / 2 for sure (a relative 1e-9 to spare): the bounds below do not apply, so
       the early rounds' candidates skip the arithmetic that shows it */
    float far = INFINITY;
    if (a->theta) {
        const double zf = (0.5 * a->t_min / (double)M * (1.0 + 1e-9) - 2.5e-7) / ((double)a->sigma * (1.0 + 1e-6)) * (1.0 + 1e-9);
        far = zf > 0.0 ? (float)zf : 0.0f;
        if ((double)far < zf) far = nextafterf(far, INFINITY);
    }
    const float equal = (float)(1.0 / (double)M);
    if (lanes) {
        for (int64_t m = 0; m < M; ++m) {
            cen[m] = (vf){0}; fb[m] = (vf){0} + equal;
            for (int64_t c = 0; c < C && a->centre; ++c) cen[m][c] = a->centre[c * M + m];
            if (a->centre) fb[m] = cen[m];
        }
    }
    int64_t j = k0 / a->chunk, kk = k0 - j * a->chunk;
    for (int64_t k = k0; k < k1; ++k, (++kk == a->chunk ? (kk = 0, ++j) : 0)) {
        int32_t bar = own;
        for (int64_t s = 0; s < a->n_threads; ++s) {
            if (s == t) continue;
            const int32_t b = __atomic_load_n(a->bests + s, __ATOMIC_RELAXED) - (s > t);
            if (b > bar) bar = b;
        }
        const int64_t kj = a->K - j * a->chunk < a->chunk ? a->K - j * a->chunk : a->chunk;
        const float *base = a->z + (j - a->z_chunk0) * a->chunk * CM;
        int gathered = 0;
#define GATHER_Z() do { \
            if (lanes && next_k == k) { float *zt = z; z = zn; zn = zt; } /* loaded while the last one was scored */ \
            else if (lanes) lanes_of(base + kk * M, kj * M, C, M, z); \
            else for (int64_t c = 0; c < C; ++c) \
                for (int64_t m = 0; m < M; ++m) z[c * cs + m * ms] = base[(c * kj + kk) * M + m]; \
            gathered = 1; \
        } while (0)
        int64_t u8 = a->n_pad;
        if (a->theta) {
            if (bar != quick_bar) {
                const double zl = skip_below(a, bar);
                quick = (float)zl;
                if ((double)quick > zl) quick = nextafterf(quick, 0.0f);
                quick_bar = bar;
            }
            float zmax = 0.0f;
            if (a->zmax) { /* the draws are gathered only if the candidate is scored */
                if (quick > 0.0f) { /* to the next candidate the quick test leaves, 8 at a time (no branch each) */
                    const int64_t end = kk + (k1 - k);
                    int64_t s = kk;
#if defined(__AVX__)
                    const __m256 qv = _mm256_set1_ps(quick);
                    for (; s + 8 <= end; s += 8) {
                        const unsigned hit = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(a->zmax + s), qv, _CMP_GE_OQ));
                        if (hit) { s += __builtin_ctz(hit); break; }
                    }
#endif
                    while (s < end && a->zmax[s] < quick) ++s;
                    n_skipped += s - kk; k += s - kk; kk = s;
                    if (k == k1) break;
                }
                zmax = a->zmax[kk];
                if (zmax < quick) { ++n_skipped; continue; }
            } else if (lanes) {
                GATHER_Z();
                vf amax = (vf){0};
                for (int64_t m = 0; m < M; ++m) {
                    const vf av = (vf)((vi)(*(vf *)(z + 8 * m)) & (int32_t)0x7fffffff);
                    amax = vsel(av > amax, av, amax);
                }
#if defined(__AVX__)
                __m256 mx = _mm256_max_ps((__m256)amax, _mm256_permute2f128_ps((__m256)amax, (__m256)amax, 1));
                mx = _mm256_max_ps(mx, _mm256_shuffle_ps(mx, mx, 0x4e));
                mx = _mm256_max_ps(mx, _mm256_shuffle_ps(mx, mx, 0xb1));
                zmax = _mm256_cvtss_f32(mx);
#else
                for (int i = 0; i < 8; ++i) zmax = amax[i] > zmax ? amax[i] : zmax;
#endif
                if (zmax < quick) { ++n_skipped; continue; }
            } else {
                if (quick > 0.0f) {
                    int small = 1;
                    for (int64_t c = 0; c < C && small; ++c) {
                        const float *zc = base + (c * kj + kk) * M;
                        for (int64_t m = 0; m < M; ++m) small &= fabsf(zc[m]) < quick;
                    }
                    if (small) { ++n_skipped; continue; }
                }
                GATHER_Z();
                for (int64_t i = 0; i < CM; ++i) zmax = fabsf(z[i]) > zmax ? fabsf(z[i]) : zmax;
            }
            /* |v - centre| <= |fl(fl(z sigma) + centre) - centre|: sigma |z| to a relative 2^-23, plus half an ulp
               of a weight (< 2) */
            const double d = (double)a->sigma * (double)zmax * (1.0 + 1e-6) + 2.5e-7, den = a->t_min - (double)M * d;
            if (zmax < far && den > 0.5 * a->t_min) {
                const double e = d / den;
                /* wrong clips that must be able to turn right: more than bar - right_total - n_masked */
                const int64_t q = (int64_t)bar - a->right_total - a->n_masked;
                if (q >= a->n_phi || (q >= 0 && e < a->phi[q])) { ++n_skipped; continue; }
                /* u8 = 8 ceil(#{theta <= e} / 8) = 8 #{j: theta[8 j] <= e} (theta ascending): a branch-free search */
                int64_t lo = 0;
                if (th8) {
                    vl cnt = (vl){0};
                    for (int64_t i = 0; i < nb4; i += 4) cnt -= (vl)(*(const vd *)(th8 + i) <= e);
                    lo = cnt[0] + cnt[1] + cnt[2] + cnt[3];
                } else {
                    const double *th = a->theta;
                    int64_t len = nb;
                    if (len > 0) {
                        while (len > 1) { const int64_t half = len / 2; lo += (int64_t)(th[8 * (lo + half)] <= e) * half; len -= half; }
                        lo += th[8 * lo] <= e;
                    }
                }
                u8 = 8 * lo;
                if (u8 > a->n_pad) u8 = a->n_pad;
            }
        }
        const float *p = a->p; const int32_t *y = a->y; const int32_t *safe = a->safe_suffix;
        const float *pair_p = a->pair_p; const int32_t *pair_i = a->pair_i;
        if (2 * u8 > a->n_pad) { /* safe_suffix[n_pad] = 0 either way */
            u8 = a->n_pad; p = a->pf; y = a->yf; pair_p = a->pair_pf; pair_i = a->pair_if;
        }
        const int64_t ur = u8 < a->n_real ? u8 : a->n_real;
        const int64_t need = (int64_t)bar + 1 - safe[u8] - a->n_masked; /* right among the first u8 */
        if (need > ur) { ++n_skipped; continue; }
        ++n_scored; n_clips += u8 + a->n_masked;
        if (!gathered) GATHER_Z();
#undef GATHER_Z
        /* the candidate's weights, as prepare() makes them (the same float operations, a class per lane) */
        if (lanes) {
            vf v[8];
            for (int64_t m = 0; m < M; ++m) {
                v[m] = *(vf *)(z + 8 * m);
                if (a->centre) { v[m] = v[m] * a->sigma + cen[m]; v[m] = vsel(v[m] > 0.0f, v[m], (vf){0}); }
            }
            vf total = v[0];
            for (int64_t m = 1; m < M; ++m) total = total + v[m];
            const vi dead = total <= 1e-12f;
            for (int64_t m = 0; m < M; ++m) *(vf *)(w + 8 * m) = vsel(dead, fb[m], v[m] / total);
        } else for (int64_t c = 0; c < C; ++c) {
            float *wc = w + c * M; const float *zc = z + c * M;
            for (int64_t m = 0; m < M; ++m) {
                if (a->centre) { const float v = zc[m] * a->sigma + a->centre[c * M + m]; wc[m] = v > 0.0f ? v : 0.0f; }
                else wc[m] = zc[m];
            }
            float total = wc[0];
            for (int64_t m = 1; m < M; ++m) total = total + wc[m];
            if (total <= 1e-12f) { for (int64_t m = 0; m < M; ++m) wc[m] = a->centre ? a->centre[c * M + m] : equal; }
            else { for (int64_t m = 0; m < M; ++m) wc[m] = wc[m] / total; }
        }
        const int64_t slack = ur - (need > 0 ? need : 0);
        /* pairs first while they settle most candidates (then a candidate they leave costs both) */
        if (lanes && pair_p && u8 >= 32 && 2 * pair_left <= pair_tried + 64) {
            ++pair_tried;
            if (k + 1 < k1) { /* load the next candidate's draws now: the pair test's loop ends in a mispredicted
                                 branch, which would otherwise stall that chain of loads and shuffles */
                int64_t j1 = j, kk1 = kk + 1;
                if (kk1 == a->chunk) { kk1 = 0; ++j1; }
                const int64_t kj1 = a->K - j1 * a->chunk < a->chunk ? a->K - j1 * a->chunk : a->chunk;
                lanes_of(a->z + (j1 - a->z_chunk0) * a->chunk * CM + kk1 * M, kj1 * M, C, M, zn);
                next_k = k + 1;
            }
            int hopeless;
            switch (M) {
            case 1: hopeless = hopeless_m1(w, pair_p, pair_i, a->n_pad, u8, slack); break;
            case 2: hopeless = hopeless_m2(w, pair_p, pair_i, a->n_pad, u8, slack); break;
            case 3: hopeless = hopeless_m3(w, pair_p, pair_i, a->n_pad, u8, slack); break;
            case 4: hopeless = hopeless_m4(w, pair_p, pair_i, a->n_pad, u8, slack); break;
            case 5: hopeless = hopeless_m5(w, pair_p, pair_i, a->n_pad, u8, slack); break;
            case 6: hopeless = hopeless_m6(w, pair_p, pair_i, a->n_pad, u8, slack); break;
            case 7: hopeless = hopeless_m7(w, pair_p, pair_i, a->n_pad, u8, slack); break;
            default: hopeless = hopeless_m8(w, pair_p, pair_i, a->n_pad, u8, slack); break;
            }
            if (hopeless) { ++n_paired; continue; }
            ++pair_left;
        }
        int32_t got = 0;
        if (u8 > 0) {
            switch (M) {
            case 1: got = eval_m1(w, cs, ms, C, p, y, a->n_pad, u8, a->n_real, slack); break;
            case 2: got = eval_m2(w, cs, ms, C, p, y, a->n_pad, u8, a->n_real, slack); break;
            case 3: got = eval_m3(w, cs, ms, C, p, y, a->n_pad, u8, a->n_real, slack); break;
            case 4: got = eval_m4(w, cs, ms, C, p, y, a->n_pad, u8, a->n_real, slack); break;
            case 5: got = eval_m5(w, cs, ms, C, p, y, a->n_pad, u8, a->n_real, slack); break;
            case 6: got = eval_m6(w, cs, ms, C, p, y, a->n_pad, u8, a->n_real, slack); break;
            case 7: got = eval_m7(w, cs, ms, C, p, y, a->n_pad, u8, a->n_real, slack); break;
            default: got = eval_m8(w, cs, ms, C, p, y, a->n_pad, u8, a->n_real, slack); break;
            }
            if (got < 0) continue;
        }
        int32_t total = got + safe[u8];
        if (a->n_masked) total += eval_masked(w, cs, ms, C, M, a->pm, a->ym, a->n_masked, a->mask);
        if (total > bar) {
            own = total; own_k = k;
            for (int64_t c = 0; c < C; ++c)
                for (int64_t m = 0; m < M; ++m) out_w[c * M + m] = w[c * cs + m * ms];
            __atomic_store_n(a->bests + t, own, __ATOMIC_RELAXED);
        }
    }
    free(th8);
    *out_count = own; *out_k = own_k;
    if (a->stats) {
        int64_t *st = a->stats + 4 * t;
        st[0] += n_skipped; st[1] += n_scored; st[2] += n_clips; st[3] += n_paired;
    }
}
#define SCAN_ROUND_M(MM) \
static void scan_round_m##MM(const scan_t *a, int64_t t, int64_t k0, int64_t k1, int32_t bar0, int32_t *out_count, \
                             int64_t *out_k, float *out_w) { \
    scan_round_as(a, t, k0, k1, bar0, out_count, out_k, out_w, MM); \
}
SCAN_ROUND_M(2) SCAN_ROUND_M(3) SCAN_ROUND_M(4) SCAN_ROUND_M(5)
__attribute__((noinline)) static void scan_round_any(const scan_t *a, int64_t t, int64_t k0, int64_t k1, int32_t bar0,
                                                     int32_t *out_count, int64_t *out_k, float *out_w) {
    scan_round_as(a, t, k0, k1, bar0, out_count, out_k, out_w, a->M);
}
void scan_round(const scan_t *a, int64_t t, int64_t k0, int64_t k1, int32_t bar0, int32_t *out_count,
                int64_t *out_k, float *out_w) {
    switch (a->M) {
    case 2: scan_round_m2(a, t, k0, k1, bar0, out_count, out_k, out_w); return;
    case 3: scan_round_m3(a, t, k0, k1, bar0, out_count, out_k, out_w); return;
    case 4: scan_round_m4(a, t, k0, k1, bar0, out_count, out_k, out_w); return;
    case 5: scan_round_m5(a, t, k0, k1, bar0, out_count, out_k, out_w); return;
    default: scan_round_any(a, t, k0, k1, bar0, out_count, out_k, out_w); return;
    }
}

/* the generator as after mt_uniform(g, ., n), without the floats */
void mt_skip(mt_t *g, int64_t n) {
    for (int64_t i = 0; i < n;) {
        if (--g->left == 0) mt_twist(g);
        const int64_t avail = 624 - g->next, take = n - i < avail ? n - i : avail;
        g->next += (int32_t)take; g->left -= (int32_t)(take - 1);
        i += take;
    }
}

/* A whole round on one thread, drawn chunk by chunk just before it is scored (while the chunk is in cache):
   torch.rand (uniform) or torch.randn chunks of `chunk` candidates, as the torch path draws them, into zbuf (one
   chunk). Same results as drawing the round first and calling scan_round on it. A local round whose every
   candidate the bar skips (skip_below beyond 6 > any |z| the generator's Box-Muller gives: its radius is at most
   sqrt(-2 log 2^-24) = 5.77) only advances the generator.
   The round of n_sub searches at once (as[i], bars[i] in: the best so far, out: the round's best; out_k[i]: -1 or
   the candidate that set it, its weights at out_w + i C M): searches of the same number of models draw the very
   same stream (each re-seeds the generator and every round draws the same sizes; only the centre and the bar
   differ), so each chunk is drawn once and scanned for every search whose bar does not skip the round.
   1: a chunk too small for the copy of randn, or no memory. */
int run_round(const scan_t *as, int64_t n_sub, mt_t *g, int normal, float *zbuf, int32_t *bars, int64_t *out_k,
              float *out_w) {
    const int64_t C = as[0].C, M = as[0].M, K = as[0].K, chunk = as[0].chunk;
    int *skip = malloc(sizeof(int) * (size_t)(n_sub > 0 ? n_sub : 1));
    if (!skip) return 1;
    int skip_all = 1;
    for (int64_t i = 0; i < n_sub; ++i) {
        out_k[i] = -1;
        skip[i] = as[i].theta && as[i].n_threads == 1 && skip_below(as + i, bars[i]) > 6.0;
        skip_all &= skip[i];
    }
    /* a local round's candidates: the max |z| of each, found once for every search (scan_round's first test) */
    float *zmax = normal ? malloc(sizeof(float) * (size_t)(chunk * (M + 1))) : NULL, *row = NULL;
    if (normal && !zmax) { free(skip); return 1; }
    if (zmax) row = zmax + chunk; /* the max over classes of each draw, a candidate's M in a row */
    for (int64_t k0 = 0, j = 0; k0 < K; k0 += chunk, ++j) {
        const int64_t kj = K - k0 < chunk ? K - k0 : chunk, n = C * kj * M;
        if (normal && n < 16) { free(skip); free(zmax); return 1; }
        if (skip_all) mt_skip(g, n + (normal && n % 16 ? 16 : 0)); /* mt_normal redraws the last 16 of a ragged size */
        else if (normal) mt_normal(g, zbuf, n);
        else mt_uniform(g, zbuf, n);
        if (zmax && !skip_all) {
            for (int64_t i = 0; i < kj * M; ++i) row[i] = fabsf(zbuf[i]);
            for (int64_t c = 1; c < C; ++c) {
                const float *zc = zbuf + c * kj * M;
                for (int64_t i = 0; i < kj * M; ++i) { const float v = fabsf(zc[i]); row[i] = v > row[i] ? v : row[i]; }
            }
            for (int64_t k = 0; k < kj; ++k) {
                float v = row[k * M];
                for (int64_t m = 1; m < M; ++m) v = row[k * M + m] > v ? row[k * M + m] : v;
                zmax[k] = v;
            }
        }
        for (int64_t i = 0; i < n_sub; ++i) {
            if (skip[i]) {
                if (as[i].stats) as[i].stats[0] += kj;
                continue;
            }
            scan_t a = as[i];
            a.z = zbuf; a.z_chunk0 = j; a.zmax = zmax;
            int32_t count; int64_t kb;
            scan_round(&a, 0, k0, k0 + kj, bars[i], &count, &kb, out_w + i * C * M);
            if (kb >= 0) { bars[i] = count; out_k[i] = kb; }
        }
    }
    free(skip); free(zmax);
    return 0;
}

/* Per local round, from the centre (C x M): how far each complete clip (p (C, M, n), y) is from changing the
   centre's prediction. With mu_c = sum_m centre[c,m] P_m / T_c (T_c the column's sum) and spread_c =
   sum_m |P_m - mu_c|, weights within d of the centre's move mu_c by at most e spread_c (e = d / (T - M d)): the top
   class t stays on top while e < theta = min_{c != t} (mu_t - mu_c - 2 eta) / (spread_t + spread_c), eta covering
   the scorer's float32 rounding (a relative (2M + 2) 2^-24 of a score; weights and probabilities are >= 0). A clip
   whose label y is not t can turn right only once e >= phi = its theta entry for c = y.
   Writes the clips sorted by increasing theta (p_theta, y_theta, padded to n_pad with zero probabilities and label
   -1) and their thetas, safe[i] = how many clips from position i on t gets right (safe[n..n_pad] = 0), the sorted
   phis of the wrong clips and their number, how many t gets right, min_c T_c, and the clips in the order for
   scoring them all (p_focus, y_focus): wrong first, then by increasing margin. */
typedef struct { double key; int64_t i; } keyed_t;
static int by_key(const void *a, const void *b) {
    const keyed_t *x = (const keyed_t *)a, *z = (const keyed_t *)b;
    if (x->key != z->key) return x->key < z->key ? -1 : 1;
    return (x->i > z->i) - (x->i < z->i); /* stable */
}
static int by_double(const void *a, const void *b) {
    const double x = *(const double *)a, z = *(const double *)b;
    return (x > z) - (x < z);
}
/* The order in which a round scores all clips (p_focus, y_focus, padded to n_pad) and each clip's rival for the
   pair test, from a pilot: S weightings drawn like the round's (centre + sigma N(0, 1) clipped, or U[0, 1) without
   a centre; from a generator of its own, so the search's stream is untouched) and scored in double. A clip's
   rival is the class that beat its label most often there; clips go by how often that happened, most first, so
   that a hopeless candidate shows its wrong clips first. Speed only: any order and rivals give the same counts. */
static uint64_t splitmix(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull; z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double unit(uint64_t *x) { return (double)(splitmix(x) >> 11) * (1.0 / 9007199254740992.0); }
int pilot_order(const float *p, const int64_t *y, int64_t n, int64_t n_pad, int64_t C, int64_t M,
                const float *centre, float sigma, int64_t S, uint64_t seed, float *p_focus, int32_t *y_focus,
                float *pair_p, int32_t *pair_i) {
    const int64_t CM = C * M;
    double *w = malloc(sizeof(double) * (size_t)(CM * S)), *mu = malloc(sizeof(double) * (size_t)(C > 0 ? C : 1));
    int32_t *cnt = calloc((size_t)(n * C > 0 ? n * C : 1), sizeof(int32_t));
    keyed_t *ord = malloc(sizeof(keyed_t) * (size_t)(n > 0 ? n : 1));
    int32_t *rival = malloc(sizeof(int32_t) * (size_t)(n > 0 ? n : 1));
    if (!w || !mu || !cnt || !ord || !rival) { free(w); free(mu); free(cnt); free(ord); free(rival); return 1; }
    uint64_t st = seed;
    for (int64_t s = 0; s < S; ++s) {
        double *ws = w + s * CM;
        for (int64_t c = 0; c < C; ++c) {
            double tot = 0.0;
            for (int64_t m = 0; m < M; ++m) {
                double v;
                if (centre) {
                    const double u1 = 1.0 - unit(&st), u2 = unit(&st);
                    v = centre[c * M + m] + sigma * sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
                    v = v > 0.0 ? v : 0.0;
                } else {
                    v = unit(&st);
                }
                ws[c * M + m] = v; tot += v;
            }
            for (int64_t m = 0; m < M; ++m)
                ws[c * M + m] = tot > 1e-12 ? ws[c * M + m] / tot : (centre ? centre[c * M + m] : 1.0 / (double)M);
        }
    }
    for (int64_t i = 0; i < n; ++i) {
        for (int64_t s = 0; s < S; ++s) {
            const double *ws = w + s * CM;
            double best = -INFINITY; int64_t arg = 0;
            for (int64_t c = 0; c < C; ++c) {
                double v = 0.0;
                for (int64_t m = 0; m < M; ++m) v += ws[c * M + m] * (double)p[(c * M + m) * n + i];
                if (v > best) { best = v; arg = c; }
            }
            if (arg != y[i]) ++cnt[i * C + arg];
        }
        /* rival: most frequent winner; unseen: the strongest other class under the centre (or equal weights) */
        int64_t t = -1; double tbest = -INFINITY;
        for (int64_t c = 0; c < C; ++c) {
            if (c == y[i]) continue;
            double v = 0.0;
            for (int64_t m = 0; m < M; ++m) v += (centre ? (double)centre[c * M + m] : 1.0) * (double)p[(c * M + m) * n + i];
            const double key = (double)cnt[i * C + c] * 1e6 + v; /* counts first; v < 1e6 */
            if (key > tbest) { tbest = key; t = c; }
        }
        if (t < 0) t = 0;
        rival[i] = (int32_t)t;
        ord[i].key = -(double)cnt[i * C + t]; ord[i].i = i;
    }
    qsort(ord, (size_t)n, sizeof(keyed_t), by_key);
    for (int64_t r = 0; r < CM; ++r)
        for (int64_t k = 0; k < n_pad; ++k) p_focus[r * n_pad + k] = k < n ? p[r * n + ord[k].i] : 0.0f;
    for (int64_t k = 0; k < n_pad; ++k) {
        const int64_t i = k < n ? ord[k].i : -1, yc = i >= 0 ? y[i] : 0, t = i >= 0 ? rival[i] : 0;
        y_focus[k] = i >= 0 ? (int32_t)y[i] : -1;
        for (int64_t m = 0; m < M; ++m) {
            pair_p[m * n_pad + k] = i >= 0 ? p[(yc * M + m) * n + i] : 0.0f;
            pair_p[(M + m) * n_pad + k] = i >= 0 ? p[(t * M + m) * n + i] : 0.0f;
        }
        pair_i[k] = (int32_t)yc; pair_i[n_pad + k] = (int32_t)t; pair_i[2 * n_pad + k] = t < yc ? -1 : 0;
    }
    free(w); free(mu); free(cnt); free(ord); free(rival);
    return 0;
}

static void gather_clips(const float *p, const int64_t *y, int64_t n, int64_t n_pad, int64_t CM, const keyed_t *order,
                         float *po, int32_t *yo) {
    for (int64_t r = 0; r < CM; ++r)
        for (int64_t i = 0; i < n_pad; ++i) po[r * n_pad + i] = i < n ? p[r * n + order[i].i] : 0.0f;
    for (int64_t i = 0; i < n_pad; ++i) yo[i] = i < n ? y[order[i].i] : -1;
}
int round_order(const float *p, const int64_t *y, int64_t n, int64_t n_pad, int64_t C, int64_t M, const float *centre,
                double *theta_out, int32_t *safe, double *phi, int64_t *n_phi, int64_t *right_total, double *t_min,
                float *p_theta, int32_t *y_theta, float *p_focus, int32_t *y_focus) {
    double *mu = malloc(sizeof(double) * (size_t)(2 * C * (n > 0 ? n : 1) + C));
    keyed_t *ord = malloc(sizeof(keyed_t) * (size_t)(n > 0 ? n : 1));
    keyed_t *foc = malloc(sizeof(keyed_t) * (size_t)(n > 0 ? n : 1));
    int8_t *right = malloc((size_t)(n > 0 ? n : 1));
    if (!mu || !ord || !foc || !right) { free(mu); free(ord); free(foc); free(right); return 1; }
    double *spread = mu + C * n, *t_col = spread + C * n;
    *t_min = INFINITY;
    for (int64_t c = 0; c < C; ++c) {
        double t = 0.0;
        for (int64_t m = 0; m < M; ++m) t += (double)centre[c * M + m];
        t_col[c] = t;
        if (t < *t_min) *t_min = t;
    }
    int64_t nw = 0, nr = 0;
    for (int64_t i = 0; i < n; ++i) {
        double pmax = 1.0;
        for (int64_t c = 0; c < C; ++c) {
            double s = 0.0;
            for (int64_t m = 0; m < M; ++m) {
                const double v = (double)p[(c * M + m) * n + i];
                s += (double)centre[c * M + m] * v;
                if (v > pmax) pmax = v;
            }
            mu[c * n + i] = s / t_col[c];
        }
        int64_t top = 0;
        for (int64_t c = 0; c < C; ++c) {
            double sp = 0.0;
            for (int64_t m = 0; m < M; ++m) sp += fabs((double)p[(c * M + m) * n + i] - mu[c * n + i]);
            spread[c * n + i] = sp;
            if (mu[c * n + i] > mu[top * n + i]) top = c;
        }
        const double eta = 1e-5 * pmax, mt = mu[top * n + i], st = spread[top * n + i];
        double th = INFINITY, best_other = -INFINITY;
        for (int64_t c = 0; c < C; ++c) {
            if (c != y[i] && mu[c * n + i] > best_other) best_other = mu[c * n + i];
            if (c == top) continue;
            const double gap = mt - mu[c * n + i] - 2.0 * eta, den = st + spread[c * n + i];
            const double tc = den > 0.0 ? gap / den : (gap > 0.0 ? INFINITY : -INFINITY);
            if (tc < th) th = tc;
            if (c == y[i]) phi[nw++] = tc;
        }
        right[i] = top == y[i];
        nr += right[i];
        ord[i].key = th; ord[i].i = i;
        foc[i].key = mu[y[i] * n + i] - best_other; foc[i].i = i;
    }
    qsort(ord, (size_t)n, sizeof(keyed_t), by_key);
    qsort(foc, (size_t)n, sizeof(keyed_t), by_key);
    qsort(phi, (size_t)nw, sizeof(double), by_double);
    for (int64_t i = 0; i < n; ++i) theta_out[i] = ord[i].key;
    for (int64_t i = n; i <= n_pad; ++i) safe[i] = 0;
    for (int64_t i = n - 1; i >= 0; --i) safe[i] = safe[i + 1] + right[ord[i].i];
    gather_clips(p, y, n, n_pad, C * M, ord, p_theta, y_theta);
    gather_clips(p, y, n, n_pad, C * M, foc, p_focus, y_focus);
    *n_phi = nw; *right_total = nr;
    free(mu); free(ord); free(foc); free(right);
    return 0;
}

/* ---------------------------------------------------------------------------------------------------------------
   The whole searches of n_sub subsets of one size on this thread, round by round in lockstep (one call instead of a
   Python loop over the rounds): the global round with the scans as[i] as given, then a local round per sigma
   around each search's best so far, its clip orders (round_order) and pairs (pair_arrays; without pair buffers, no
   pair test) made in that search's buffers (local_t) and the scan's fields pointed at them, then run_round for all.
   The orders and pairs depend on the centre only: a round whose centre is the last round's keeps them.
   best_w (C x M; in: equal weights) and best (in: the count to beat) of every search hold its best on return.
   0: done; 1: run_round refused a chunk; 2: no memory. */
typedef struct {
    const float *p; const int64_t *y; /* the complete clips as round_order takes them */
    double *theta, *phi; int32_t *safe;
    float *p_theta; int32_t *y_theta; float *p_focus; int32_t *y_focus;
    float *pair_theta_p; int32_t *pair_theta_i; float *pair_focus_p; int32_t *pair_focus_i;
    float *centre, *best_w; /* C x M each */
    int64_t best;
} local_t;

int run_search(scan_t *as, local_t *ls, int64_t n_sub, mt_t *g, const double *sigmas, int64_t n_sigmas,
               float *zbuf, int32_t *bars, int64_t *out_k, float *out_w) {
    const int64_t C = as[0].C, M = as[0].M, CM = C * M;
    int8_t *stale = malloc((size_t)(n_sub > 0 ? n_sub : 1)); /* the best moved since the orders were made */
    if (!stale) return 2;
    for (int64_t i = 0; i < n_sub; ++i) stale[i] = 1;
    for (int64_t r = 0; r <= n_sigmas; ++r) {
        for (int64_t i = 0; i < n_sub; ++i) {
            scan_t *a = as + i; local_t *l = ls + i;
            if (r > 0) a->sigma = (float)sigmas[r - 1];
            if (r > 0 && stale[i]) { /* the round's centre: the best so far (updates apply from the next round) */
                int64_t n_phi, right_total; double t_min;
                for (int64_t q = 0; q < CM; ++q) l->centre[q] = l->best_w[q];
                if (round_order(l->p, l->y, a->n_real, a->n_pad, C, M, l->centre, l->theta, l->safe, l->phi,
                                &n_phi, &right_total, &t_min, l->p_theta, l->y_theta, l->p_focus, l->y_focus)) {
                    free(stale);
                    return 2;
                }
                stale[i] = 0;
                if (l->pair_theta_p) {
                    pair_arrays(l->p_theta, l->y_theta, a->n_pad, C, M, l->centre, l->pair_theta_p, l->pair_theta_i);
                    pair_arrays(l->p_focus, l->y_focus, a->n_pad, C, M, l->centre, l->pair_focus_p, l->pair_focus_i);
                }
                a->centre = l->centre; a->t_min = t_min;
                a->p = l->p_theta; a->y = l->y_theta; a->pf = l->p_focus; a->yf = l->y_focus;
                a->theta = l->theta; a->safe_suffix = l->safe; a->phi = l->phi;
                a->n_phi = n_phi; a->right_total = right_total;
                a->pair_p = l->pair_theta_p; a->pair_i = l->pair_theta_i;
                a->pair_pf = l->pair_focus_p; a->pair_if = l->pair_focus_i;
            }
            for (int64_t t = 0; t < a->n_threads; ++t) a->bests[t] = (int32_t)l->best;
            bars[i] = (int32_t)l->best;
        }
        if (run_round(as, n_sub, g, r > 0, zbuf, bars, out_k, out_w)) { free(stale); return 1; }
        for (int64_t i = 0; i < n_sub; ++i) {
            if (out_k[i] < 0) continue;
            stale[i] = 1;
            ls[i].best = bars[i];
            for (int64_t q = 0; q < CM; ++q) ls[i].best_w[q] = out_w[i * CM + q];
        }
    }
    free(stale);
    return 0;
}
