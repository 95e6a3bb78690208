/* qbench.quant._cpu_kernels: two loops of a CPU training step that torch has no single op for.

   top_k_rows: the columns of the k (1..3) largest |x| of each row of a float32 matrix, exactly as
   k passes of torch's max(dim=1) find them (each the first column holding the largest |x| of the
   columns not taken yet; a NaN above any number). RAND's scale needs the top-2
   magnitudes of every row with their columns, every step. On the CPU torch's topk(2) sorts (1.7 ms
   for the demo Conformer's 3104 rows of 96), and abs + max(dim=1) with indices twice is a scalar
   loop (about 1 ms of a training step for the demo's two passes); this reads the weights once per
   pass with SIMD int compares for k <= 2 (0.3 ms for both on one thread, 0.3-0.5 ms less of a demo
   rand step), element by element for k = 3.

   uniform_16bit: the noise estimator's 16-bit uniform noise (qbench.quant.quantizers._uniform_16bit)
   from the state of numpy's PCG64, the same values as numpy's draws converted by torch, in one pass
   instead of numpy's draw loop and three torch passes.

   Both release the GIL. qbench falls back to numpy and torch where this is not built (setup.py:
   the extension is optional). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define INLINE static inline __attribute__((always_inline))

typedef int32_t __attribute__((may_alias)) float_bits;
/* 8 ints: GCC and Clang compile these to the SIMD the target has (AVX2, two SSE2 halves, NEON) */
typedef int32_t v8i __attribute__((vector_size(32)));

/* The key of |x| is x's float bits without the sign: as ints, keys order like the magnitudes (a
   NaN's is above any number's: its exponent is all ones, its mantissa not zero). */
#define ABS_BITS 0x7fffffff
#define NAN_KEYS 0x7f800000 /* keys above this are NaN */

INLINE v8i keys8(const float_bits *p) {
    v8i v;
    memcpy(&v, p, sizeof v);
    return v & ABS_BITS;
}

/* The top-2 (k = 1, 2) of a row without NaN in one pass: each of the 8 lanes keeps its two largest
   keys and their columns (a later equal key ranks below: columns grow along a lane), then the
   best two of those 16 and of the tail's columns, ranked by key, then column. The row's top two
   are among them. Returns 0 if the row has a NaN (nothing written). */
INLINE int top_2_by_lanes(const float_bits *bits, int64_t width, int k, int64_t *cols) {
    v8i k1 = {-1, -1, -1, -1, -1, -1, -1, -1}, k2 = k1, c1 = {0}, c2 = {0};
    v8i col = {0, 1, 2, 3, 4, 5, 6, 7};
    int64_t j = 0;
    for (; j + 8 <= width; j += 8, col += 8) {
        v8i key = keys8(bits + j);
        v8i gt1 = key > k1, gt2 = key > k2;
        /* second: the old first where the key beats it, the key where it beats only the second */
        k2 = (gt1 & k1) | (~gt1 & ((gt2 & key) | (~gt2 & k2)));
        c2 = (gt1 & c1) | (~gt1 & ((gt2 & col) | (~gt2 & c2)));
        k1 = (gt1 & key) | (~gt1 & k1);
        c1 = (gt1 & col) | (~gt1 & c1);
    }
    int32_t bk[2] = {-1, -1};
    int64_t bc[2] = {INT64_MAX, INT64_MAX};
    if (j > 0) {
        /* the lanes' best: the largest first key, at its lowest column (lane w) */
        int32_t m1 = -1, m2 = -1;
        for (int t = 0; t < 8; t++) m1 = k1[t] > m1 ? k1[t] : m1;
        if (m1 > NAN_KEYS) return 0;
        int w = 0;
        int32_t lowest = INT32_MAX;
        for (int t = 0; t < 8; t++)
            if (k1[t] == m1 && c1[t] < lowest) lowest = c1[t], w = t;
        /* the second: lane w's second (-1 after one block), or another lane's first (a lane's own
           second is below it) */
        for (int t = 0; t < 8; t++) {
            int32_t key = t == w ? k2[t] : k1[t];
            m2 = key > m2 ? key : m2;
        }
        int32_t second = INT32_MAX;
        for (int t = 0; t < 8; t++) {
            int32_t key = t == w ? k2[t] : k1[t], c = t == w ? c2[t] : c1[t];
            if (key == m2 && c < second) second = c;
        }
        bk[0] = m1, bc[0] = lowest, bk[1] = m2, bc[1] = second;
    }
    for (; j < width; j++) { /* the tail, at most 7 columns: ranked in */
        int32_t key = bits[j] & ABS_BITS;
        if (key > NAN_KEYS) return 0;
        if (key > bk[0]) {
            bk[1] = bk[0], bc[1] = bc[0], bk[0] = key, bc[0] = j;
        } else if (key > bk[1]) {
            bk[1] = key, bc[1] = j;
        }
    }
    cols[0] = bc[0];
    if (k == 2) cols[1] = bc[1];
    return 1;
}

/* v ranks above m as torch's max compares: larger, or a NaN above any number (the first NaN wins) */
INLINE int above(float v, float m) { return v > m || (v != v && m == m); }

/* Element by element, as torch's max compares (it takes the first NaN whatever its bits): for rows
   with a NaN, and for k = 3. Keeps the k best so far, equal values ranked by column. */
static void top_k_by_floats(const float *row, int64_t width, int k, int64_t *cols) {
    float best[3] = {-INFINITY, -INFINITY, -INFINITY};
    int64_t col[3] = {0, 0, 0};
    for (int64_t j = 0; j < width; j++) {
        float v = fabsf(row[j]);
        if (!above(v, best[k - 1])) continue;
        int i = k - 1;
        while (i > 0 && above(v, best[i - 1])) {
            best[i] = best[i - 1];
            col[i] = col[i - 1];
            i--;
        }
        best[i] = v;
        col[i] = j;
    }
    for (int i = 0; i < k; i++) cols[i] = col[i];
}

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
__attribute__((target_clones("avx2", "default"))) /* picked when the library loads */
#endif
static void top_k_row_range(const float *x, int64_t *out, int64_t rows, int64_t width, int64_t stride, int k) {
    for (int64_t r = 0; r < rows; r++) {
        const float *row = x + r * stride;
        int64_t *cols = out + r * k;
        if (k > 2 || !top_2_by_lanes((const float_bits *)row, width, k, cols)) top_k_by_floats(row, width, k, cols);
    }
}

/* One thread: on a training step's CPU torch's OpenMP threads spin between ops, and a second thread
   here fought them (a demo step 1.2 ms slower than with torch's own ops). */
static PyObject *py_top_k_rows(PyObject *self, PyObject *args) {
    unsigned long long src, dst;
    long long rows, width, stride;
    int k;
    if (!PyArg_ParseTuple(args, "KKLLLi", &src, &dst, &rows, &width, &stride, &k)) return NULL;
    if (k < 1 || k > 3 || rows < 0 || width < k || width > INT32_MAX || stride < width) {
        PyErr_SetString(PyExc_ValueError, "top_k_rows: need 1 <= k <= 3, k <= width < 2^31, width <= row stride");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    top_k_row_range((const float *)(uintptr_t)src, (int64_t *)(uintptr_t)dst, rows, width, stride, k);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* PCG64 (XSL RR 128/64) as numpy's: step the 128-bit LCG, then output from the new state. Each
   64-bit output is four int16 values v, low bits first (numpy's int16 view of its uint64 draws on a
   little-endian machine), written as (v + 1/2) / 2^16: both steps exact in float32. */
typedef int16_t __attribute__((may_alias)) int16_view;

static void uniform_16bit(float *dst, int64_t n, __uint128_t state, __uint128_t inc) {
    const __uint128_t mult = ((__uint128_t)0x2360ED051FC65DA4ULL << 64) | 0x4385DF649FCCF645ULL;
    uint64_t raw[512]; /* a block of draws in L1, then converted in a vectorised loop */
    for (int64_t i = 0; i < n;) {
        int64_t draws = (n - i + 3) / 4 < 512 ? (n - i + 3) / 4 : 512;
        for (int64_t b = 0; b < draws; b++) {
            state = state * mult + inc;
            uint64_t x = (uint64_t)(state >> 64) ^ (uint64_t)state;
            unsigned rot = (unsigned)(state >> 122);
            raw[b] = (x >> rot) | (x << ((-rot) & 63));
        }
        const int16_view *v = (const int16_view *)raw;
        int64_t count = 4 * draws < n - i ? 4 * draws : n - i;
        for (int64_t t = 0; t < count; t++) dst[i + t] = ((float)v[t] + 0.5f) * (1.0f / 65536);
        i += count;
    }
}

static PyObject *py_uniform_16bit(PyObject *self, PyObject *args) {
    unsigned long long dst, state_hi, state_lo, inc_hi, inc_lo;
    long long n;
    if (!PyArg_ParseTuple(args, "KLKKKK", &dst, &n, &state_hi, &state_lo, &inc_hi, &inc_lo)) return NULL;
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
    PyErr_SetString(PyExc_NotImplementedError, "uniform_16bit: numpy's int16 view differs on this byte order");
    return NULL;
#endif
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "uniform_16bit: n < 0");
        return NULL;
    }
    __uint128_t state = ((__uint128_t)state_hi << 64) | state_lo, inc = ((__uint128_t)inc_hi << 64) | inc_lo;
    Py_BEGIN_ALLOW_THREADS
    uniform_16bit((float *)(uintptr_t)dst, n, state, inc);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"uniform_16bit", py_uniform_16bit, METH_VARARGS,
     "uniform_16bit(dst, n, state_hi, state_lo, inc_hi, inc_lo): n float32 values (v + 1/2) / 2^16 at "
     "address dst, v the int16 quarters of the next n/4 outputs of PCG64 with that 128-bit state and "
     "increment (numpy's PCG64(seed).state)."},
    {"top_k_rows", py_top_k_rows, METH_VARARGS,
     "top_k_rows(src, dst, rows, width, row_stride, k): the columns of the k largest |x| of "
     "each row of the float32 matrix at address src (rows of `width` values, `row_stride` apart), "
     "largest first, written as int64 (rows, k) to address dst."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_cpu_kernels", NULL, -1, methods};

PyMODINIT_FUNC PyInit__cpu_kernels(void) { return PyModule_Create(&module); }
