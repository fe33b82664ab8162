/*
 * Integer inner products of 8-bit codes with 8-bit queries: the scan behind SQ8 shards.
 *
 *     out[q * n + i] = sum_j codes[i * d + j] * queries[q * d + j]
 *
 * codes are unsigned bytes (FAISS ScalarQuantizer QT_8bit codes, row-major, n x d), queries
 * signed bytes (nq x d), out int32 (nq x n). Sums are exact: |q| <= 127 and d < 66,000 keep
 * them inside int32.
 *
 * FAISS's own SQ8 scan decodes each code to float and multiplies in float, which is
 * compute-bound at about a third of memory bandwidth per core. Here one AVX-512 VNNI
 * instruction multiplies and adds 64 byte pairs, so a scan is memory-bound, 4x fewer bytes
 * than float32. Kernels: "avx512-vnni", "avx2", "scalar"; the best one the CPU supports is
 * the default, chosen at run time, so one build runs on every x86-64 machine (and others
 * get the portable loop).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define SQ8_X86 1
#endif

/* Rows scanned for every query before moving on: 256 rows of 1024 bytes stay in L2. */
#define ROW_BLOCK 256

typedef void (*scan_fn)(const uint8_t *codes, Py_ssize_t n, Py_ssize_t d, const int8_t *queries,
                        Py_ssize_t nq, int32_t *out);

static int32_t dot_scalar(const uint8_t *row, const int8_t *q, Py_ssize_t d) {
    int32_t acc = 0;
    for (Py_ssize_t j = 0; j < d; j++) acc += (int32_t)row[j] * (int32_t)q[j];
    return acc;
}

static void scan_scalar(const uint8_t *codes, Py_ssize_t n, Py_ssize_t d, const int8_t *queries,
                        Py_ssize_t nq, int32_t *out) {
    for (Py_ssize_t i0 = 0; i0 < n; i0 += ROW_BLOCK) {
        Py_ssize_t i1 = i0 + ROW_BLOCK < n ? i0 + ROW_BLOCK : n;
        for (Py_ssize_t q = 0; q < nq; q++)
            for (Py_ssize_t i = i0; i < i1; i++)
                out[q * n + i] = dot_scalar(codes + i * d, queries + q * d, d);
    }
}

#ifdef SQ8_X86
#define VNNI_TARGET __attribute__((target("avx512f,avx512bw,avx512vnni")))

VNNI_TARGET static inline __m512i dot_step_vnni(__m512i acc, const uint8_t *row, __m512i q) {
    return _mm512_dpbusd_epi32(acc, _mm512_loadu_si512((const void *)row), q);
}

VNNI_TARGET static inline __m512i dot_tail_vnni(__m512i acc, const uint8_t *row, __m512i q,
                                                __mmask64 mask) {
    return _mm512_dpbusd_epi32(acc, _mm512_maskz_loadu_epi8(mask, row), q);
}

/* Four rows at a time share each query load and keep four independent accumulators. */
VNNI_TARGET static void scan_vnni(const uint8_t *codes, Py_ssize_t n, Py_ssize_t d,
                                  const int8_t *queries, Py_ssize_t nq, int32_t *out) {
    const Py_ssize_t full = d & ~(Py_ssize_t)63;
    const Py_ssize_t rest = d - full;
    const __mmask64 mask = rest ? (__mmask64)(~0ULL >> (64 - rest)) : 0;
    for (Py_ssize_t i0 = 0; i0 < n; i0 += ROW_BLOCK) {
        Py_ssize_t i1 = i0 + ROW_BLOCK < n ? i0 + ROW_BLOCK : n;
        for (Py_ssize_t qi = 0; qi < nq; qi++) {
            const int8_t *qv = queries + qi * d;
            int32_t *o = out + qi * n;
            Py_ssize_t i = i0;
            for (; i + 4 <= i1; i += 4) {
                const uint8_t *r = codes + i * d;
                __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
                for (Py_ssize_t j = 0; j < full; j += 64) {
                    __m512i q = _mm512_loadu_si512((const void *)(qv + j));
                    a0 = dot_step_vnni(a0, r + j, q);
                    a1 = dot_step_vnni(a1, r + d + j, q);
                    a2 = dot_step_vnni(a2, r + 2 * d + j, q);
                    a3 = dot_step_vnni(a3, r + 3 * d + j, q);
                }
                if (rest) {
                    __m512i q = _mm512_maskz_loadu_epi8(mask, qv + full);
                    a0 = dot_tail_vnni(a0, r + full, q, mask);
                    a1 = dot_tail_vnni(a1, r + d + full, q, mask);
                    a2 = dot_tail_vnni(a2, r + 2 * d + full, q, mask);
                    a3 = dot_tail_vnni(a3, r + 3 * d + full, q, mask);
                }
                o[i] = _mm512_reduce_add_epi32(a0);
                o[i + 1] = _mm512_reduce_add_epi32(a1);
                o[i + 2] = _mm512_reduce_add_epi32(a2);
                o[i + 3] = _mm512_reduce_add_epi32(a3);
            }
            for (; i < i1; i++) {
                const uint8_t *r = codes + i * d;
                __m512i a = _mm512_setzero_si512();
                for (Py_ssize_t j = 0; j < full; j += 64)
                    a = dot_step_vnni(a, r + j, _mm512_loadu_si512((const void *)(qv + j)));
                if (rest) a = dot_tail_vnni(a, r + full, _mm512_maskz_loadu_epi8(mask, qv + full), mask);
                o[i] = _mm512_reduce_add_epi32(a);
            }
        }
    }
}

#define AVX2_TARGET __attribute__((target("avx2")))

/* Bytes widened to 16 bits, then pairwise multiply-add into 32 bits: no saturation. */
AVX2_TARGET static int32_t dot_avx2(const uint8_t *row, const int8_t *q, Py_ssize_t d) {
    const Py_ssize_t full = d & ~(Py_ssize_t)15;
    __m256i acc = _mm256_setzero_si256();
    for (Py_ssize_t j = 0; j < full; j += 16) {
        __m256i c = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(row + j)));
        __m256i v = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(q + j)));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(c, v));
    }
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
    s = _mm_hadd_epi32(s, s);
    s = _mm_hadd_epi32(s, s);
    return _mm_cvtsi128_si32(s) + dot_scalar(row + full, q + full, d - full);
}

AVX2_TARGET static void scan_avx2(const uint8_t *codes, Py_ssize_t n, Py_ssize_t d,
                                  const int8_t *queries, Py_ssize_t nq, int32_t *out) {
    for (Py_ssize_t i0 = 0; i0 < n; i0 += ROW_BLOCK) {
        Py_ssize_t i1 = i0 + ROW_BLOCK < n ? i0 + ROW_BLOCK : n;
        for (Py_ssize_t q = 0; q < nq; q++)
            for (Py_ssize_t i = i0; i < i1; i++)
                out[q * n + i] = dot_avx2(codes + i * d, queries + q * d, d);
    }
}
#endif /* SQ8_X86 */

typedef struct {
    const char *name;
    scan_fn fn;
} kernel_t;

/* Kernels this CPU can run, best first; filled at import. */
static kernel_t kernels[3];
static int n_kernels = 0;

static void find_kernels(void) {
#ifdef SQ8_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vnni"))
        kernels[n_kernels++] = (kernel_t){"avx512-vnni", scan_vnni};
    if (__builtin_cpu_supports("avx2")) kernels[n_kernels++] = (kernel_t){"avx2", scan_avx2};
#endif
    kernels[n_kernels++] = (kernel_t){"scalar", scan_scalar};
}

PyDoc_STRVAR(scan_doc,
             "scan(codes, n, d, queries, nq, out, kernel=None)\n--\n\n"
             "Write the int32 inner products of n uint8 code rows (n x d bytes) with nq int8\n"
             "queries (nq x d bytes) into out (nq x n int32, C order). kernel: a name from\n"
             "kernels(), default the first. Releases the GIL while it runs.");

static PyObject *sq8_scan(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"codes", "n", "d", "queries", "nq", "out", "kernel", NULL};
    Py_buffer codes, queries, out;
    Py_ssize_t n, d, nq;
    const char *name = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*nny*nw*|z", keywords, &codes, &n, &d, &queries,
                                     &nq, &out, &name))
        return NULL;
    PyObject *result = NULL;
    scan_fn fn = NULL;
    for (int k = 0; k < n_kernels && !fn; k++)
        if (!name || strcmp(name, kernels[k].name) == 0) fn = kernels[k].fn;
    if (!fn) {
        PyErr_Format(PyExc_ValueError, "kernel %s is not available on this CPU", name);
    } else if (n < 0 || d <= 0 || nq < 0 || d > 65535) {
        PyErr_Format(PyExc_ValueError, "need n >= 0, 0 < d <= 65535, nq >= 0 (got n=%zd d=%zd nq=%zd)",
                     n, d, nq);
    } else if (codes.len < n * d || queries.len < nq * d ||
               out.len < nq * n * (Py_ssize_t)sizeof(int32_t)) {
        PyErr_SetString(PyExc_ValueError, "a buffer is smaller than its stated shape");
    } else {
        Py_BEGIN_ALLOW_THREADS
        fn((const uint8_t *)codes.buf, n, d, (const int8_t *)queries.buf, nq, (int32_t *)out.buf);
        Py_END_ALLOW_THREADS
        result = Py_NewRef(Py_None);
    }
    PyBuffer_Release(&codes);
    PyBuffer_Release(&queries);
    PyBuffer_Release(&out);
    return result;
}

PyDoc_STRVAR(kernels_doc, "kernels()\n--\n\nNames of the kernels this CPU can run, best first.");

static PyObject *sq8_kernels(PyObject *self, PyObject *unused) {
    PyObject *names = PyList_New(n_kernels);
    if (!names) return NULL;
    for (int k = 0; k < n_kernels; k++) {
        PyObject *s = PyUnicode_FromString(kernels[k].name);
        if (!s) {
            Py_DECREF(names);
            return NULL;
        }
        PyList_SET_ITEM(names, k, s);
    }
    return names;
}

static PyMethodDef methods[] = {
    {"scan", (PyCFunction)(void (*)(void))sq8_scan, METH_VARARGS | METH_KEYWORDS, scan_doc},
    {"kernels", sq8_kernels, METH_NOARGS, kernels_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_sq8scan", "Integer inner products of uint8 codes with int8 queries.", -1,
    methods,
};

PyMODINIT_FUNC PyInit__sq8scan(void) {
    find_kernels();
    return PyModule_Create(&module);
}
