/* bp's packed bfloat16 GEMM: C = alpha * op(A) @ op(B) + beta * C (+ bias, then an activation),
 * row-major float32 operands, products of bf16-rounded inputs, float32 accumulation.
 *
 * Used by bpcore/_bf16.pyx, which also holds the portable fallback (sgemm on bf16-rounded copies)
 * and the run-time choice between the paths. This file holds what is C: the CPU probe, the scalar
 * bf16 rounding (the fallback's and the reference's semantics), and the AVX512-BF16 kernel.
 *
 * The arithmetic (one AVX512-BF16 instruction does it): vdpbf16ps multiplies pairs of bfloat16
 * and adds both products to a float32 lane, acc += a[2i] * b[2i] + a[2i+1] * b[2i+1]; so the
 * packed operands hold each 32-bit word as one (k, k+1) pair of bf16 values. The float32 inputs
 * become bf16 while they are packed (vcvtne2ps2bf16: round to nearest even, denormal inputs flushed
 * to signed zero, NaN kept quiet: bp_bf16_round_bits below is the same function in scalar C).
 *
 * Blocking (the Goto/BLIS loop nest):
 *   B is packed whole, in panels of NR = 32 columns; panel jp holds, for every k pair q, the 32
 *     words (op(B)[2q, j], op(B)[2q+1, j]): ceil(k/2) * 32 words, zero-padded past k and past n.
 *     This layout does not depend on KC or on the thread count, so a weight can be packed once
 *     per update (bp_bf16_pack_b) and reused by every product until the next update.
 *   A is packed per thread in blocks of MC x KC (<= 512 KB, half the 1 MB L2 of Zen 4), as
 *     8-row micro-panels: for every k pair q, 8 words (op(A)[i, 2q], op(A)[i, 2q+1]).
 *   The 8 x 32 micro-kernel keeps a C tile in 16 zmm accumulators; per k pair it loads 2 zmm of B,
 *     broadcasts 8 words of A and issues 16 vdpbf16ps. Its output stage applies alpha, beta, the
 *     bias and the activation (the fused epilogue) on the last K block.
 *
 * Threads: OpenMP, n_threads as given (the caller settles it). The threads split the C matrix
 *   into a grid of tm x tn rectangles (8-row panels along M first, 32-column panels along N when
 *   M is too short); each thread packs its own rows of A and writes only its own rectangle, so
 *   there are no races and no reductions: every C entry is summed in the same order whatever the
 *   thread count, and the results are bit-identical for 1, 2 or more threads.
 *
 * Portability: the AVX512-BF16 functions carry a per-function target attribute (GCC >= 10,
 *   Clang >= 9), so this file compiles without -m flags and the extension imports on any
 *   x86-64; bp_bf16_cpu_path() checks cpuid and the OS's zmm state at run time. Other compilers
 *   (MSVC: no target attribute; it accepts AVX-512 intrinsics without /arch, so enabling it there
 *   is a question of testing) and other CPUs get BP_BF16_PATH_FALLBACK. New kernels (AMX tiles on
 *   Sapphire Rapids, ARM BFMMLA) get a path code here and a branch in _bf16.pyx's dispatch; the
 *   packed-B layout is a per-path format (bp_bf16_packed_b_bytes takes the path).
 */
#ifndef BP_BF16_GEMM_H
#define BP_BF16_GEMM_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* The kernels a process can run; the numbers are stable (they tag pre-packed buffers). */
#define BP_BF16_PATH_FALLBACK 0   /* sgemm on bf16-rounded float32 copies (any CPU) */
#define BP_BF16_PATH_AVX512 1     /* vdpbf16ps, 8 x 32 micro-kernel (Zen 4, Cooper Lake, SPR) */
#define BP_BF16_PATH_AMX 2        /* reserved: AMX-BF16 tiles (Sapphire Rapids and later) */
#define BP_BF16_PATH_ARM_BFMMLA 3 /* reserved: ARMv8.6 BFMMLA (Graviton 3, Apple M2) */

/* The fused epilogue's activations (the hook: add a code and its branch in the output stage). */
#define BP_BF16_ACT_NONE 0
#define BP_BF16_ACT_RELU 1

#define BP_BF16_MR 8
#define BP_BF16_NR 32
#define BP_BF16_KC 1024 /* even: K blocks start on a pair */
#define BP_BF16_MC 256  /* MC * KC * 2 bytes = 512 KB of packed A */

/* ---- the rounding, in scalar C: the fallback's semantics and the hardware's ------------------ */

/* bf16(x) as the float32 bit pattern with the low 16 bits zero: round to nearest even; zero and
 * denormal inputs give a signed zero (vcvtne2ps2bf16 treats denormals as zero); NaN stays a
 * (quiet) NaN. Overflow rounds to infinity, as round-to-nearest must. */
static inline uint32_t bp_bf16_round_bits(uint32_t u) {
    /* selects, not branches: the loops over arrays vectorise */
    uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    r = (u & 0x7f800000u) == 0 ? (u & 0x80000000u) : r;
    return (u & 0x7fffffffu) > 0x7f800000u ? ((u | 0x00400000u) & 0xffff0000u) : r;
}

/* out[i, j] = bf16(x[i, j]) as float32, for a rows x cols block with row strides ldx and ldo. */
static void bp_bf16_round_f32(ptrdiff_t rows, ptrdiff_t cols, const float* x, ptrdiff_t ldx,
                              float* out, ptrdiff_t ldo, int n_threads) {
    ptrdiff_t i;
    if (n_threads > 1 && rows > 1 && rows * cols > 65536) {
#ifdef _OPENMP
        #pragma omp parallel for num_threads(n_threads) schedule(static)
#endif
        for (i = 0; i < rows; i++) {
            const uint32_t* src = (const uint32_t*)(x + i * ldx);
            uint32_t* dst = (uint32_t*)(out + i * ldo);
            ptrdiff_t j;
            for (j = 0; j < cols; j++) dst[j] = bp_bf16_round_bits(src[j]);
        }
        return;
    }
    for (i = 0; i < rows; i++) {
        const uint32_t* src = (const uint32_t*)(x + i * ldx);
        uint32_t* dst = (uint32_t*)(out + i * ldo);
        ptrdiff_t j;
        for (j = 0; j < cols; j++) dst[j] = bp_bf16_round_bits(src[j]);
    }
}

/* ---- aligned scratch -------------------------------------------------------------------------- */

static void* bp_bf16_alloc(size_t bytes) {
    /* 64-byte aligned (one zmm, one cache line); the offset to free() sits just before it */
    unsigned char* raw = (unsigned char*)malloc(bytes + 64 + sizeof(void*));
    uintptr_t p;
    if (raw == NULL) return NULL;
    p = ((uintptr_t)(raw + sizeof(void*)) + 63u) & ~(uintptr_t)63u;
    ((void**)p)[-1] = raw;
    return (void*)p;
}

static void bp_bf16_free(void* p) {
    if (p != NULL) free(((void**)p)[-1]);
}

/* Per-thread scratch for the packed A block (and the fallback's rounded A), grown on demand and
 * kept: a product then allocates nothing once its thread has seen a block this size (a 512 KB
 * malloc per call is an mmap, and its pages fault in again on every product). OpenMP's and the
 * caller's threads live as long as the process, so the buffers do too. */
#if defined(_MSC_VER)
#define BP_BF16_THREAD_LOCAL __declspec(thread)
#else
#define BP_BF16_THREAD_LOCAL __thread
#endif
static BP_BF16_THREAD_LOCAL void* bp_bf16_scratch_ptr = NULL;
static BP_BF16_THREAD_LOCAL size_t bp_bf16_scratch_size = 0;

static void* bp_bf16_scratch(size_t bytes) {
    if (bytes > bp_bf16_scratch_size) {
        bp_bf16_free(bp_bf16_scratch_ptr);
        bp_bf16_scratch_ptr = bp_bf16_alloc(bytes);
        bp_bf16_scratch_size = bp_bf16_scratch_ptr == NULL ? 0 : bytes;
    }
    return bp_bf16_scratch_ptr;
}

/* ---- the packed-B format, per path ------------------------------------------------------------- */

/* Bytes of a packed op(B) (k x n) for `path`: AVX512: ceil(n/32) panels of ceil(k/2) * 32 words;
 * FALLBACK: a 64-byte header (int32 trans_b) then B rounded to bf16, as float32 in B's own
 * layout (n x k if trans_b, else k x n, rows contiguous): sgemm transposes for free. */
#define BP_BF16_FALLBACK_HEADER 64
static inline size_t bp_bf16_packed_b_bytes(int path, ptrdiff_t k, ptrdiff_t n) {
    if (path == BP_BF16_PATH_AVX512)
        return (size_t)((n + BP_BF16_NR - 1) / BP_BF16_NR) * (size_t)((k + 1) / 2) * BP_BF16_NR * 4u;
    return BP_BF16_FALLBACK_HEADER + (size_t)k * (size_t)n * 4u;
}

/* ---- the CPU probe ------------------------------------------------------------------------------ */

#if (defined(__x86_64__) || defined(_M_X64)) && \
    ((defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 10) || \
     (defined(__clang__) && __clang_major__ >= 9))
#define BP_BF16_HAVE_AVX512 1
#else
#define BP_BF16_HAVE_AVX512 0
#endif

#if BP_BF16_HAVE_AVX512
#include <cpuid.h>
#include <immintrin.h>

static int bp_bf16_cpu_has_avx512bf16(void) {
    unsigned int a, b, c, d, xcr0_lo, xcr0_hi;
    if (!__get_cpuid_count(1, 0, &a, &b, &c, &d)) return 0;
    if (!(c & (1u << 27))) return 0;               /* OSXSAVE: the OS saves extended state */
    __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
    if ((xcr0_lo & 0xe6u) != 0xe6u) return 0;      /* XMM, YMM, opmask, ZMM_Hi256, Hi16_ZMM */
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    if ((b & ((1u << 16) | (1u << 30) | (1u << 31))) != ((1u << 16) | (1u << 30) | (1u << 31)))
        return 0;                                  /* AVX512F, AVX512BW, AVX512VL */
    if (a < 1) return 0;                           /* no sub-leaf 1 */
    if (!__get_cpuid_count(7, 1, &a, &b, &c, &d)) return 0;
    return (a & (1u << 5)) != 0;                   /* AVX512_BF16 */
}
#else
static int bp_bf16_cpu_has_avx512bf16(void) { return 0; }
#endif

/* The best kernel this CPU and this build can run (AMX and BFMMLA: not written yet). */
static int bp_bf16_cpu_path(void) {
    if (bp_bf16_cpu_has_avx512bf16()) return BP_BF16_PATH_AVX512;
    return BP_BF16_PATH_FALLBACK;
}

/* ---- the AVX512-BF16 kernel --------------------------------------------------------------------- */

#if BP_BF16_HAVE_AVX512
#define BP_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

static inline __mmask16 bp_bf16_mask16(ptrdiff_t n) {
    return n >= 16 ? (__mmask16)0xffff : (n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1u));
}

/* 32 float32 (lo, hi) -> 32 bf16 in order, as 16 (even, odd) pair words */
BP_BF16_TARGET static inline __m512i bp_bf16_cvt32(__m512 lo, __m512 hi) {
    return (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
}

/* 16 x 16 transpose of 32-bit words: o[q] word j = r[j] word q. In-lane 4 x 4 transposes by
 * unpacks, then a 4 x 4 transpose of the 128-bit lanes by two rounds of shuffle_i32x4. */
BP_BF16_TARGET static inline void bp_bf16_transpose16(const __m512i* r, __m512i* o) {
    __m512i b[16], c[4];
    int g, w, L;
    for (g = 0; g < 4; g++) {
        __m512i a0 = _mm512_unpacklo_epi32(r[4 * g], r[4 * g + 1]);
        __m512i a1 = _mm512_unpackhi_epi32(r[4 * g], r[4 * g + 1]);
        __m512i a2 = _mm512_unpacklo_epi32(r[4 * g + 2], r[4 * g + 3]);
        __m512i a3 = _mm512_unpackhi_epi32(r[4 * g + 2], r[4 * g + 3]);
        b[4 * 0 + g] = _mm512_unpacklo_epi64(a0, a2);  /* b[4w + g]: word w of each lane */
        b[4 * 1 + g] = _mm512_unpackhi_epi64(a0, a2);
        b[4 * 2 + g] = _mm512_unpacklo_epi64(a1, a3);
        b[4 * 3 + g] = _mm512_unpackhi_epi64(a1, a3);
    }
    for (w = 0; w < 4; w++) {
        const __m512i* X = b + 4 * w;
        c[0] = _mm512_shuffle_i32x4(X[0], X[1], 0x44);
        c[1] = _mm512_shuffle_i32x4(X[0], X[1], 0xEE);
        c[2] = _mm512_shuffle_i32x4(X[2], X[3], 0x44);
        c[3] = _mm512_shuffle_i32x4(X[2], X[3], 0xEE);
        o[4 * 0 + w] = _mm512_shuffle_i32x4(c[0], c[2], 0x88);
        o[4 * 1 + w] = _mm512_shuffle_i32x4(c[0], c[2], 0xDD);
        o[4 * 2 + w] = _mm512_shuffle_i32x4(c[1], c[3], 0x88);
        o[4 * 3 + w] = _mm512_shuffle_i32x4(c[1], c[3], 0xDD);
    }
    (void)L;
}

/* Pack panel jp of op(B) (k x n): ceil(k/2) * 32 words at out. */
BP_BF16_TARGET static void bp_bf16_pack_b_panel(int trans_b, ptrdiff_t k, ptrdiff_t n,
                                                const float* B, ptrdiff_t ldb, ptrdiff_t jp,
                                                uint32_t* out) {
    ptrdiff_t j0 = jp * BP_BF16_NR, nr = n - j0 < BP_BF16_NR ? n - j0 : BP_BF16_NR;
    ptrdiff_t kp = (k + 1) / 2, q, j;
    if (!trans_b) {
        /* op(B)[p, j] = B[p, j]: rows 2q and 2q+1 side by side, then interleave the halves */
        const __m512i inter = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10,
                                               25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20, 4,
                                               19, 3, 18, 2, 17, 1, 16, 0);
        __mmask16 m0 = bp_bf16_mask16(nr), m1 = bp_bf16_mask16(nr - 16);
        for (q = 0; q < kp; q++) {
            const float* r0 = B + (2 * q) * ldb + j0;
            const float* r1 = r0 + ldb;
            int has1 = 2 * q + 1 < k;
            __m512 a0 = _mm512_maskz_loadu_ps(m0, r0), a1 = _mm512_maskz_loadu_ps(m1, r0 + 16);
            __m512 b0 = has1 ? _mm512_maskz_loadu_ps(m0, r1) : _mm512_setzero_ps();
            __m512 b1 = has1 ? _mm512_maskz_loadu_ps(m1, r1 + 16) : _mm512_setzero_ps();
            _mm512_storeu_si512((void*)(out + q * 32),
                               _mm512_permutexvar_epi16(inter, bp_bf16_cvt32(a0, b0)));
            _mm512_storeu_si512((void*)(out + q * 32 + 16),
                               _mm512_permutexvar_epi16(inter, bp_bf16_cvt32(a1, b1)));
        }
    } else {
        /* op(B)[p, j] = B[j, p]: row j of B already holds the pairs (one conversion gives 16);
         * 16 rows x 16 pairs are transposed in registers into 16 k pairs x 16 columns */
        ptrdiff_t h, t;
        __m512i r[16], o[16];
        for (h = 0; h < 2; h++) {
            for (q = 0; q < kp; q += 16) {
                ptrdiff_t left = k - 2 * q, nq = kp - q < 16 ? kp - q : 16;
                for (t = 0; t < 16; t++) {
                    j = h * 16 + t;
                    if (j < nr) {
                        const float* row = B + (j0 + j) * ldb + 2 * q;
                        r[t] = bp_bf16_cvt32(_mm512_maskz_loadu_ps(bp_bf16_mask16(left), row),
                                             _mm512_maskz_loadu_ps(bp_bf16_mask16(left - 16), row + 16));
                    } else {
                        r[t] = _mm512_setzero_si512();
                    }
                }
                bp_bf16_transpose16(r, o);
                for (t = 0; t < nq; t++)
                    _mm512_storeu_si512((void*)(out + (q + t) * 32 + h * 16), o[t]);
            }
        }
    }
}

/* Pack rows [i0, i0 + mc) x columns [p0, p0 + kc) of op(A) into 8-row micro-panels of
 * ceil(kc/2) * 8 words each (rows past m padded with zeros). */
BP_BF16_TARGET static void bp_bf16_pack_a(int trans_a, ptrdiff_t m, const float* A, ptrdiff_t lda,
                                          ptrdiff_t i0, ptrdiff_t mc, ptrdiff_t p0, ptrdiff_t kc,
                                          uint32_t* out) {
    ptrdiff_t kcp = (kc + 1) / 2, ir, q, i;
    for (ir = 0; ir < mc; ir += BP_BF16_MR) {
        ptrdiff_t mr = m - (i0 + ir) < BP_BF16_MR ? m - (i0 + ir) : BP_BF16_MR;
        uint32_t* panel = out + (ir / BP_BF16_MR) * kcp * BP_BF16_MR;
        if (!trans_a) {
            /* op(A)[i, p] = A[i, p]: a row converts to its pair words; 8 rows (and 8 zero
             * ones) x 16 pairs are transposed in registers; the low half of each is a k pair */
            ptrdiff_t t;
            __m512i r[16], o[16];
            for (t = 8; t < 16; t++) r[t] = _mm512_setzero_si512();
            for (q = 0; q < kcp; q += 16) {
                ptrdiff_t left = kc - 2 * q, nq = kcp - q < 16 ? kcp - q : 16;
                for (i = 0; i < BP_BF16_MR; i++) {
                    if (i < mr) {
                        const float* row = A + (i0 + ir + i) * lda + p0 + 2 * q;
                        r[i] = bp_bf16_cvt32(_mm512_maskz_loadu_ps(bp_bf16_mask16(left), row),
                                             _mm512_maskz_loadu_ps(bp_bf16_mask16(left - 16), row + 16));
                    } else {
                        r[i] = _mm512_setzero_si512();
                    }
                }
                bp_bf16_transpose16(r, o);
                for (t = 0; t < nq; t++)
                    _mm256_storeu_si256((__m256i*)(panel + (q + t) * 8), _mm512_castsi512_si256(o[t]));
            }
        } else {
            /* op(A)[i, p] = A[p, i]: rows p .. p+3 of A give 8 entries each; one conversion
             * and one word permutation make two k pairs of the micro-panel */
            const __m512i inter = _mm512_set_epi16(31, 23, 30, 22, 29, 21, 28, 20, 27, 19, 26, 18,
                                                   25, 17, 24, 16, 15, 7, 14, 6, 13, 5, 12, 4,
                                                   11, 3, 10, 2, 9, 1, 8, 0);
            __mmask16 mm = bp_bf16_mask16(mr);
            for (q = 0; q < kcp; q += 2) {
                __m256 r[4];
                int t;
                for (t = 0; t < 4; t++) {
                    ptrdiff_t p = 2 * q + t;
                    r[t] = p < kc ? _mm256_maskz_loadu_ps((__mmask8)mm, A + (p0 + p) * lda + i0 + ir)
                                  : _mm256_setzero_ps();
                }
                __m512 lo = _mm512_castpd_ps(_mm512_insertf64x4(
                    _mm512_castps_pd(_mm512_castps256_ps512(r[0])), _mm256_castps_pd(r[1]), 1));
                __m512 hi = _mm512_castpd_ps(_mm512_insertf64x4(
                    _mm512_castps_pd(_mm512_castps256_ps512(r[2])), _mm256_castps_pd(r[3]), 1));
                __m512i v = _mm512_permutexvar_epi16(inter, bp_bf16_cvt32(lo, hi));
                if (q + 1 < kcp)
                    _mm512_storeu_si512((void*)(panel + q * 8), v);
                else
                    _mm256_storeu_si256((__m256i*)(panel + q * 8), _mm512_castsi512_si256(v));
            }
        }
    }
}

#define BP_BF16_ROW(i)                                                            \
    {                                                                             \
        __m512bh a_ = (__m512bh)_mm512_set1_epi32((int)Ap[i]);                    \
        c##i##0 = _mm512_dpbf16_ps(c##i##0, a_, b0);                              \
        c##i##1 = _mm512_dpbf16_ps(c##i##1, a_, b1);                              \
    }

#define BP_BF16_STORE(i)                                                          \
    if (i < mr) {                                                                 \
        float* crow = C + (i) * ldc;                                              \
        bp_bf16_store(crow, m0, c##i##0, alpha, beta, first, last, bias, act);    \
        bp_bf16_store(crow + 16, m1, c##i##1, alpha, beta, first, last,           \
                      bias ? bias + 16 : NULL, act);                              \
    }

/* The output stage of 16 columns of one row: alpha, then beta * C on the first K block or
 * C + on later ones, then on the last K block the bias and the activation (the epilogue). */
BP_BF16_TARGET static inline void bp_bf16_store(float* c, __mmask16 mask, __m512 acc, float alpha,
                                                float beta, int first, int last,
                                                const float* bias, int act) {
    __m512 v;
    if (!mask) return;
    v = _mm512_mul_ps(_mm512_set1_ps(alpha), acc);
    if (!first)
        v = _mm512_add_ps(_mm512_maskz_loadu_ps(mask, c), v);
    else if (beta != 0.0f)  /* beta == 0 overwrites: C may hold NaN on entry, as in BLAS */
        v = _mm512_fmadd_ps(_mm512_set1_ps(beta), _mm512_maskz_loadu_ps(mask, c), v);
    if (last) {
        if (bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, bias));
        if (act == BP_BF16_ACT_RELU) v = _mm512_max_ps(v, _mm512_setzero_ps());
    }
    _mm512_mask_storeu_ps(c, mask, v);
}

/* C[0:mr, 0:nr] (op)= the 8 x 32 tile of the packed micro-panels over kp k pairs. */
BP_BF16_TARGET static void bp_bf16_kernel(ptrdiff_t kp, const uint32_t* Ap, const uint32_t* Bp,
                                          float* C, ptrdiff_t ldc, ptrdiff_t mr, ptrdiff_t nr,
                                          float alpha, float beta, int first, int last,
                                          const float* bias, int act) {
    __m512 c00 = _mm512_setzero_ps(), c01 = _mm512_setzero_ps();
    __m512 c10 = _mm512_setzero_ps(), c11 = _mm512_setzero_ps();
    __m512 c20 = _mm512_setzero_ps(), c21 = _mm512_setzero_ps();
    __m512 c30 = _mm512_setzero_ps(), c31 = _mm512_setzero_ps();
    __m512 c40 = _mm512_setzero_ps(), c41 = _mm512_setzero_ps();
    __m512 c50 = _mm512_setzero_ps(), c51 = _mm512_setzero_ps();
    __m512 c60 = _mm512_setzero_ps(), c61 = _mm512_setzero_ps();
    __m512 c70 = _mm512_setzero_ps(), c71 = _mm512_setzero_ps();
    ptrdiff_t q;
    __mmask16 m0 = bp_bf16_mask16(nr), m1 = bp_bf16_mask16(nr - 16);
    for (q = 0; q < kp; q++) {
        __m512bh b0 = (__m512bh)_mm512_loadu_si512((const void*)Bp);
        __m512bh b1 = (__m512bh)_mm512_loadu_si512((const void*)(Bp + 16));
        BP_BF16_ROW(0) BP_BF16_ROW(1) BP_BF16_ROW(2) BP_BF16_ROW(3)
        BP_BF16_ROW(4) BP_BF16_ROW(5) BP_BF16_ROW(6) BP_BF16_ROW(7)
        Ap += BP_BF16_MR;
        Bp += BP_BF16_NR;
    }
    BP_BF16_STORE(0) BP_BF16_STORE(1) BP_BF16_STORE(2) BP_BF16_STORE(3)
    BP_BF16_STORE(4) BP_BF16_STORE(5) BP_BF16_STORE(6) BP_BF16_STORE(7)
}

/* One product, as the threads see it. */
typedef struct {
    int trans_a;
    ptrdiff_t m, n, k;
    float alpha;
    const float* A;
    ptrdiff_t lda;
    const uint32_t* Bp;  /* packed op(B), the AVX512 format */
    float beta;
    float* C;
    ptrdiff_t ldc;
    const float* bias;
    int act;
    int tm, tn;          /* the thread grid */
    int failed;          /* a thread could not allocate its A block */
} bp_bf16_job;

/* The share [lo, hi) of `total` units that part `i` of `parts` gets (as even as possible). */
static inline void bp_bf16_share(ptrdiff_t total, int parts, int i, ptrdiff_t* lo, ptrdiff_t* hi) {
    ptrdiff_t base = total / parts, extra = total % parts;
    *lo = i * base + (i < extra ? i : extra);
    *hi = *lo + base + (i < extra ? 1 : 0);
}

BP_BF16_TARGET static void bp_bf16_thread(bp_bf16_job* job, int tid) {
    ptrdiff_t mpanels = (job->m + BP_BF16_MR - 1) / BP_BF16_MR;
    ptrdiff_t npanels = (job->n + BP_BF16_NR - 1) / BP_BF16_NR;
    ptrdiff_t kpairs = (job->k + 1) / 2;
    ptrdiff_t mlo, mhi, nlo, nhi, ic, pc, jp, ir;
    uint32_t* Ap;
    bp_bf16_share(mpanels, job->tm, tid / job->tn, &mlo, &mhi);
    bp_bf16_share(npanels, job->tn, tid % job->tn, &nlo, &nhi);
    if (mlo >= mhi || nlo >= nhi) return;
    mlo *= BP_BF16_MR;
    mhi = mhi * BP_BF16_MR < job->m ? mhi * BP_BF16_MR : job->m;
    {
        ptrdiff_t rows = mhi - mlo < BP_BF16_MC ? mhi - mlo : BP_BF16_MC;
        ptrdiff_t cols = job->k < BP_BF16_KC ? job->k : BP_BF16_KC;
        rows = (rows + BP_BF16_MR - 1) / BP_BF16_MR * BP_BF16_MR;
        Ap = (uint32_t*)bp_bf16_scratch((size_t)rows * (size_t)((cols + 1) / 2) * 4u);
    }
    if (Ap == NULL) {
        job->failed = 1;
        return;
    }
    for (ic = mlo; ic < mhi; ic += BP_BF16_MC) {
        ptrdiff_t mc = mhi - ic < BP_BF16_MC ? mhi - ic : BP_BF16_MC;
        for (pc = 0; pc < job->k; pc += BP_BF16_KC) {
            ptrdiff_t kc = job->k - pc < BP_BF16_KC ? job->k - pc : BP_BF16_KC;
            ptrdiff_t kcp = (kc + 1) / 2;
            int first = pc == 0, last = pc + kc >= job->k;
            bp_bf16_pack_a(job->trans_a, job->m, job->A, job->lda, ic, mc, pc, kc, Ap);
            for (jp = nlo; jp < nhi; jp++) {
                const uint32_t* Bpanel = job->Bp + jp * kpairs * BP_BF16_NR + (pc / 2) * BP_BF16_NR;
                ptrdiff_t j0 = jp * BP_BF16_NR;
                ptrdiff_t nr = job->n - j0 < BP_BF16_NR ? job->n - j0 : BP_BF16_NR;
                for (ir = 0; ir < mc; ir += BP_BF16_MR) {
                    ptrdiff_t mr = mc - ir < BP_BF16_MR ? mc - ir : BP_BF16_MR;
                    bp_bf16_kernel(kcp, Ap + (ir / BP_BF16_MR) * kcp * BP_BF16_MR, Bpanel,
                                   job->C + (ic + ir) * job->ldc + j0, job->ldc, mr, nr,
                                   job->alpha, job->beta, first, last,
                                   job->bias ? job->bias + j0 : NULL, job->act);
                }
            }
        }
    }
}

/* Pack op(B) (k x n) into `out` (bp_bf16_packed_b_bytes(BP_BF16_PATH_AVX512, k, n) bytes,
 * 64-byte aligned), the panels shared among n_threads. */
static void bp_bf16_pack_b_avx512(int trans_b, ptrdiff_t k, ptrdiff_t n, const float* B,
                                  ptrdiff_t ldb, void* out, int n_threads) {
    ptrdiff_t npanels = (n + BP_BF16_NR - 1) / BP_BF16_NR, kpairs = (k + 1) / 2, jp;
    /* (a branch, not an if clause: libgomp starts a team of one for a false if, ~3 us) */
    if (n_threads > 1 && npanels > 1 && k * n > 65536) {
#ifdef _OPENMP
        #pragma omp parallel for num_threads(n_threads) schedule(static)
#endif
        for (jp = 0; jp < npanels; jp++)
            bp_bf16_pack_b_panel(trans_b, k, n, B, ldb, jp,
                                 (uint32_t*)out + jp * kpairs * BP_BF16_NR);
        return;
    }
    for (jp = 0; jp < npanels; jp++)
        bp_bf16_pack_b_panel(trans_b, k, n, B, ldb, jp, (uint32_t*)out + jp * kpairs * BP_BF16_NR);
}

/* C = alpha * op(A) @ op(B) + beta * C, then + bias and the activation, with op(B) pre-packed.
 * m, n >= 1 and k >= 1 (the caller handles the empty cases). Returns 0, or -1 if out of memory. */
static int bp_bf16_gemm_packed_avx512(int trans_a, ptrdiff_t m, ptrdiff_t n, ptrdiff_t k,
                                      float alpha, const float* A, ptrdiff_t lda, const void* Bp,
                                      float beta, float* C, ptrdiff_t ldc, const float* bias,
                                      int act, int n_threads) {
    bp_bf16_job job;
    ptrdiff_t mpanels = (m + BP_BF16_MR - 1) / BP_BF16_MR;
    ptrdiff_t npanels = (n + BP_BF16_NR - 1) / BP_BF16_NR;
    int t;
    /* Threads lose on small work (a team costs a few microseconds to wake and join). */
    if ((double)m * (double)n * (double)k < 262144.0) n_threads = 1;
#ifndef _OPENMP
    n_threads = 1;
#endif
    if (n_threads < 1) n_threads = 1;
    job.trans_a = trans_a; job.m = m; job.n = n; job.k = k; job.alpha = alpha;
    job.A = A; job.lda = lda; job.Bp = (const uint32_t*)Bp; job.beta = beta; job.C = C;
    job.ldc = ldc; job.bias = bias; job.act = act; job.failed = 0;
    /* Split M first (each thread packs only its own rows of A); split N when M has fewer
     * 8-row panels than 2 per thread (then every thread packs the same, short, A). */
    if (mpanels >= 2 * n_threads || npanels < n_threads) {
        job.tm = n_threads; job.tn = 1;
    } else {
        job.tm = 1; job.tn = n_threads;
    }
    if (n_threads == 1) {
        bp_bf16_thread(&job, 0);
    } else {
#ifdef _OPENMP
        #pragma omp parallel for num_threads(n_threads) schedule(static, 1)
        for (t = 0; t < n_threads; t++) bp_bf16_thread(&job, t);
#endif
    }
    (void)t;
    return job.failed ? -1 : 0;
}

/* The peak of the micro-kernel's instruction: `reps` rounds of 16 independent vdpbf16ps on
 * registers (no memory), 64 flops each. Returns a value so that nothing is optimised away. */
BP_BF16_TARGET static float bp_bf16_dot_peak_loop(long reps) {
    __m512 c[16];
    __m512bh a = (__m512bh)_mm512_set1_epi32(0x3f803f80), b = (__m512bh)_mm512_set1_epi32(0x00010001);
    long r;
    int i;
    for (i = 0; i < 16; i++) c[i] = _mm512_setzero_ps();
    for (r = 0; r < reps; r++) {
        c[0] = _mm512_dpbf16_ps(c[0], a, b);   c[1] = _mm512_dpbf16_ps(c[1], a, b);
        c[2] = _mm512_dpbf16_ps(c[2], a, b);   c[3] = _mm512_dpbf16_ps(c[3], a, b);
        c[4] = _mm512_dpbf16_ps(c[4], a, b);   c[5] = _mm512_dpbf16_ps(c[5], a, b);
        c[6] = _mm512_dpbf16_ps(c[6], a, b);   c[7] = _mm512_dpbf16_ps(c[7], a, b);
        c[8] = _mm512_dpbf16_ps(c[8], a, b);   c[9] = _mm512_dpbf16_ps(c[9], a, b);
        c[10] = _mm512_dpbf16_ps(c[10], a, b); c[11] = _mm512_dpbf16_ps(c[11], a, b);
        c[12] = _mm512_dpbf16_ps(c[12], a, b); c[13] = _mm512_dpbf16_ps(c[13], a, b);
        c[14] = _mm512_dpbf16_ps(c[14], a, b); c[15] = _mm512_dpbf16_ps(c[15], a, b);
        __asm__ volatile("" : "+v"(a), "+v"(b));
    }
    for (i = 1; i < 16; i++) c[0] = _mm512_add_ps(c[0], c[i]);
    return _mm512_reduce_add_ps(c[0]);
}

/* The hardware's rounding of n float32 to bf16 (as float32), for the tests of its semantics. */
BP_BF16_TARGET static void bp_bf16_round_hw(const float* x, ptrdiff_t n, float* out) {
    ptrdiff_t i, t;
    uint16_t h[32];
    for (i = 0; i < n; i += 32) {
        ptrdiff_t left = n - i;
        __m512 lo = _mm512_maskz_loadu_ps(bp_bf16_mask16(left), x + i);
        __m512 hi = _mm512_maskz_loadu_ps(bp_bf16_mask16(left - 16), x + i + 16);
        _mm512_storeu_si512((void*)h, bp_bf16_cvt32(lo, hi));
        for (t = 0; t < 32 && i + t < n; t++) ((uint32_t*)out)[i + t] = (uint32_t)h[t] << 16;
    }
}

#else  /* no AVX512-BF16 in this build: the entries exist, the dispatch never picks them */

static void bp_bf16_pack_b_avx512(int trans_b, ptrdiff_t k, ptrdiff_t n, const float* B,
                                  ptrdiff_t ldb, void* out, int n_threads) {
    (void)trans_b; (void)k; (void)n; (void)B; (void)ldb; (void)out; (void)n_threads;
}
static int bp_bf16_gemm_packed_avx512(int trans_a, ptrdiff_t m, ptrdiff_t n, ptrdiff_t k,
                                      float alpha, const float* A, ptrdiff_t lda, const void* Bp,
                                      float beta, float* C, ptrdiff_t ldc, const float* bias,
                                      int act, int n_threads) {
    (void)trans_a; (void)m; (void)n; (void)k; (void)alpha; (void)A; (void)lda; (void)Bp;
    (void)beta; (void)C; (void)ldc; (void)bias; (void)act; (void)n_threads;
    return -1;
}
static float bp_bf16_dot_peak_loop(long reps) { (void)reps; return 0.0f; }
static void bp_bf16_round_hw(const float* x, ptrdiff_t n, float* out) {
    (void)x; (void)n; (void)out;
}
#endif

#endif /* BP_BF16_GEMM_H */
