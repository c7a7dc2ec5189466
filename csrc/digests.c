/*
** rollproof's digest sorter: a Python extension module (rollproof.engines.sqlite._digests) that
** sorts a key-less table's 32-byte row digests and merges sorted runs of them, in the order
** Python gives byte strings (memcmp's), which the table digest is defined by. It works on
** buffers (bytes, bytearray, mmap) in place or block by block, so neither a worker nor the
** fingerprinting process copies a run of digests to sort or merge it, and nothing imports numpy
** (about 90 ms to import, more than sorting a million digests takes) where it is built.
**
**   sort(buffer)                  sorts a writable buffer's records in place (the GIL released)
**   merge(runs, update, block)    merges sorted buffers, calling update(bytes) with each block
**                                 of at most `block` records in order (written straight into
**                                 the bytes object handed on). Returns the number of records.
**
** Both refuse a buffer whose length is not a multiple of 32, and merge refuses a run that is
** not sorted (a caller's error would otherwise give a digest no other path gives).
*/
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define DIGEST 32
#define INSERTION_MAX 96

/* Eight bytes read as a big-endian integer: comparing two of them orders as memcmp does. */
static inline uint64_t be64(const unsigned char *p) {
  return ((uint64_t)p[0] << 56) | ((uint64_t)p[1] << 48) | ((uint64_t)p[2] << 40) |
         ((uint64_t)p[3] << 32) | ((uint64_t)p[4] << 24) | ((uint64_t)p[5] << 16) |
         ((uint64_t)p[6] << 8) | (uint64_t)p[7];
}

/* memcmp(a, b, DIGEST) for records equal before byte `at` (at <= DIGEST - 8): the eight bytes
** from `at` compared as one integer, the rest by memcmp only when those are equal. */
static inline int record_cmp(const unsigned char *a, const unsigned char *b, int at) {
  uint64_t x = be64(a + at), y = be64(b + at);
  if (x != y) return x < y ? -1 : 1;
  return memcmp(a + at + 8, b + at + 8, (size_t)(DIGEST - at - 8));
}

static int digest_cmp(const void *a, const void *b) { return record_cmp(a, b, 0); }

/* Records equal before byte `at`, sorted by insertion (a bucket of a few dozen). */
static void insertion_sort(unsigned char *base, Py_ssize_t n, int at) {
  unsigned char held[DIGEST];
  Py_ssize_t i, j;
  for (i = 1; i < n; i++) {
    memcpy(held, base + i * DIGEST, DIGEST);
    for (j = i; j > 0 && record_cmp(base + (j - 1) * DIGEST, held, at) > 0; j--) {
      memcpy(base + j * DIGEST, base + (j - 1) * DIGEST, DIGEST);
    }
    memcpy(base + j * DIGEST, held, DIGEST);
  }
}

/* Distribute `count` records of `from` into `to` by their byte `at` (a stable counting sort);
** `start` receives where each of the 256 buckets begins, start[256] the end. */
static void distribute(const unsigned char *from, unsigned char *to, Py_ssize_t count, int at,
                       Py_ssize_t start[257]) {
  Py_ssize_t next[256], i;
  int b;
  memset(next, 0, sizeof next);
  for (i = 0; i < count; i++) next[from[i * DIGEST + at]]++;
  start[0] = 0;
  for (b = 0; b < 256; b++) {
    start[b + 1] = start[b] + next[b];
    next[b] = start[b];
  }
  for (i = 0; i < count; i++) {
    memcpy(to + next[from[i * DIGEST + at]]++ * DIGEST, from + i * DIGEST, DIGEST);
  }
}

/* The records sorted bytewise, in place: distributed by their first byte into `tmp`, each of
** those buckets back by its second byte (two passes of 256 buckets each, so every pass writes
** to few places at once and the second stays in cache), then each small bucket sorted on its
** own (by insertion up to INSERTION_MAX records: 2M digests leave about 30 a bucket, where
** qsort's calls through a pointer cost three times as much). Digests are uniform, so a final
** bucket holds about n / 65536 records. */
static void sort_records(unsigned char *data, unsigned char *tmp, Py_ssize_t count) {
  Py_ssize_t outer[257], inner[257];
  int b, c;
  distribute(data, tmp, count, 0, outer);
  for (b = 0; b < 256; b++) {
    Py_ssize_t first = outer[b], size = outer[b + 1] - outer[b];
    if (size == 0) continue;
    distribute(tmp + first * DIGEST, data + first * DIGEST, size, 1, inner);
    for (c = 0; c < 256; c++) {
      Py_ssize_t m = inner[c + 1] - inner[c];
      unsigned char *base = data + (first + inner[c]) * DIGEST;
      if (m > INSERTION_MAX) {
        qsort(base, (size_t)m, DIGEST, digest_cmp);
      } else if (m > 1) {
        insertion_sort(base, m, 2);
      }
    }
  }
}

static PyObject *digests_sort(PyObject *self, PyObject *arg) {
  Py_buffer view;
  unsigned char *tmp;
  (void)self;
  if (PyObject_GetBuffer(arg, &view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) return NULL;
  if (view.len % DIGEST != 0) {
    PyBuffer_Release(&view);
    PyErr_SetString(PyExc_ValueError, "sort: length is not a multiple of 32");
    return NULL;
  }
  if (view.len > DIGEST) {
    tmp = PyMem_RawMalloc((size_t)view.len);
    if (tmp == NULL) {
      PyBuffer_Release(&view);
      return PyErr_NoMemory();
    }
    Py_BEGIN_ALLOW_THREADS
    sort_records(view.buf, tmp, view.len / DIGEST);
    Py_END_ALLOW_THREADS
    PyMem_RawFree(tmp);
  }
  PyBuffer_Release(&view);
  Py_RETURN_NONE;
}

/* ---- merging ---------------------------------------------------------------------------- */

typedef struct {
  const unsigned char *head; /* the run's next record */
  const unsigned char *end;
} Run;

/* A binary min-heap of run indexes ordered by their heads (ties by index, so equal records
** come in run order, though equal records are equal bytes either way). */
static int run_less(const Run *runs, int a, int b) {
  int c = record_cmp(runs[a].head, runs[b].head, 0);
  return c < 0 || (c == 0 && a < b);
}

static void sift_down(int *heap, int size, const Run *runs, int at) {
  for (;;) {
    int left = 2 * at + 1, right = left + 1, least = at, t;
    if (left < size && run_less(runs, heap[left], heap[least])) least = left;
    if (right < size && run_less(runs, heap[right], heap[least])) least = right;
    if (least == at) return;
    t = heap[at];
    heap[at] = heap[least];
    heap[least] = t;
    at = least;
  }
}

/* Hand the block (a bytes object the merge filled with `n` bytes) to update(block): the
** callee owns what it keeps; -1 on an error. */
static int hand_over(PyObject *update, PyObject **block, Py_ssize_t n) {
  PyObject *result;
  if (n < PyBytes_GET_SIZE(*block) && _PyBytes_Resize(block, n) < 0) return -1;
  result = PyObject_CallOneArg(update, *block);
  Py_CLEAR(*block);
  if (result == NULL) return -1;
  Py_DECREF(result);
  return 0;
}

static PyObject *digests_merge(PyObject *self, PyObject *args) {
  PyObject *seq, *update, *fast = NULL, *result = NULL;
  Py_ssize_t block, k = 0, i, filled = 0, total = 0;
  Py_buffer *views = NULL;
  Run *runs = NULL;
  int *heap = NULL, size = 0;
  PyObject *out = NULL; /* the block being filled, a bytes object of `block` records */
  (void)self;
  if (!PyArg_ParseTuple(args, "OOn:merge", &seq, &update, &block)) return NULL;
  if (block < 1) {
    PyErr_SetString(PyExc_ValueError, "merge: block must be at least 1");
    return NULL;
  }
  fast = PySequence_Fast(seq, "merge: runs must be a sequence");
  if (fast == NULL) return NULL;
  k = PySequence_Fast_GET_SIZE(fast);
  if (k > INT_MAX / 2) {
    PyErr_SetString(PyExc_ValueError, "merge: too many runs");
    goto done;
  }
  views = PyMem_Calloc((size_t)(k ? k : 1), sizeof *views);
  runs = PyMem_Calloc((size_t)(k ? k : 1), sizeof *runs);
  heap = PyMem_Calloc((size_t)(k ? k : 1), sizeof *heap);
  if (block > PY_SSIZE_T_MAX / DIGEST) block = PY_SSIZE_T_MAX / DIGEST;
  if (views == NULL || runs == NULL || heap == NULL) {
    PyErr_NoMemory();
    goto done;
  }
  for (i = 0; i < k; i++) {
    const unsigned char *p, *q;
    if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(fast, i), &views[i], PyBUF_C_CONTIGUOUS) < 0) {
      k = i; /* release only those taken */
      goto done;
    }
    if (views[i].len % DIGEST != 0) {
      PyErr_SetString(PyExc_ValueError, "merge: length is not a multiple of 32");
      k = i + 1;
      goto done;
    }
    p = views[i].buf;
    runs[i].head = p;
    runs[i].end = p + views[i].len;
    for (q = p; q + DIGEST < runs[i].end; q += DIGEST) {
      if (record_cmp(q, q + DIGEST, 0) > 0) {
        PyErr_Format(PyExc_ValueError, "merge: run %zd is not sorted", i);
        k = i + 1;
        goto done;
      }
    }
    if (runs[i].head < runs[i].end) heap[size++] = (int)i;
  }
  for (i = size / 2 - 1; i >= 0; i--) sift_down(heap, size, runs, (int)i);
  while (size > 0) {
    Run *r = &runs[heap[0]];
    if (out == NULL) {
      Py_ssize_t left = 0;
      for (i = 0; i < size; i++) left += (runs[heap[i]].end - runs[heap[i]].head) / DIGEST;
      out = PyBytes_FromStringAndSize(NULL, (left < block ? left : block) * DIGEST);
      if (out == NULL) goto done;
    }
    memcpy(PyBytes_AS_STRING(out) + filled * DIGEST, r->head, DIGEST);
    r->head += DIGEST;
    if (r->head == r->end) heap[0] = heap[--size];
    if (size > 1) sift_down(heap, size, runs, 0);
    total++;
    if (++filled * DIGEST == PyBytes_GET_SIZE(out)) {
      if (hand_over(update, &out, filled * DIGEST) < 0) goto done;
      filled = 0;
    }
  }
  result = PyLong_FromSsize_t(total);
done:
  if (views != NULL) {
    for (i = 0; i < k; i++) PyBuffer_Release(&views[i]);
  }
  PyMem_Free(views);
  PyMem_Free(runs);
  PyMem_Free(heap);
  Py_XDECREF(out);
  Py_XDECREF(fast);
  return result;
}

static PyMethodDef methods[] = {
    {"sort", digests_sort, METH_O,
     "sort(buffer) -> None\n\nSort a writable buffer's 32-byte records bytewise, in place."},
    {"merge", digests_merge, METH_VARARGS,
     "merge(runs, update, block) -> int\n\nMerge sorted buffers of 32-byte records, calling "
     "update(bytes) with each block of at most `block` records in order; returns the count."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_digests",
    "Sorting and merging 32-byte row digests in place (csrc/digests.c).", -1, methods, NULL, NULL,
    NULL, NULL,
};

PyMODINIT_FUNC PyInit__digests(void) { return PyModule_Create(&module); }
