/*
** rollproof's binary COPY reader: a Python extension module (rollproof.engines.postgres._pgcopy)
** that drives libpq's COPY OUT loop in C, with the GIL released, for the PostgreSQL
** fingerprint (engines/postgres/copyloop.py, docs/postgresql.md).
**
** libpq sends one CopyData message per row. Taking each one through Python (psycopg's
** PGconn.get_copy_data) costs about 0.25 us a row, more than the server spends producing it:
** a narrow table's read was bound by the client. Here the loop is C, and Python sees a buffer
** once it is full. The module does not link libpq: the caller passes the addresses of the
** libpq functions of the library psycopg itself uses, and the constructor checks them against
** the connection (its socket and backend process id, asked through those functions, must be
** the ones psycopg reports) before anything is read.
**
**   Reader(conn, functions, socket, backend_pid)
**       conn: the PGconn pointer (psycopg's pgconn.pgconn_ptr); functions: the addresses of
**       PQgetCopyData, PQfreemem, PQconsumeInput, PQsocket and PQbackendPID.
**   reader.fill(buffer, timeout_ms) -> (filled, state)
**       Copies the COPY stream's bytes into the writable buffer, as they come.
**   reader.digests(buffer, columns, timeout_ms) -> (filled, state)
**       Writes one 32-byte BLAKE2s-256 digest for each row into the buffer: the digest of the
**       row's bytes exactly as the binary COPY sends them (its int16 field count, then each
**       field's int32 length, -1 for NULL, and its bytes). The stream's framing is checked on
**       the way: the first message must begin with the binary COPY header (signature, no
**       flags, no extension), every row must have `columns` fields that end exactly at the end
**       of its message, and the trailer (field count -1) must be the last message, alone.
**
** Both return when the buffer is full (state 1), when nothing came for timeout_ms (state 0,
** so that Python can handle signals; call again), or at the end of the COPY (state -1: the
** caller then takes the command's result from libpq as usual). State -2 is libpq's failure to
** read COPY data (PQgetCopyData returned -2) and -3 a failure to read from the socket
** (PQconsumeInput returned 0): the caller raises with the connection's error message. A
** framing error in `digests` raises ValueError. `messages` counts the CopyData messages taken,
** `waited` the seconds spent waiting for the server in poll(2), `trailer` whether `digests`
** has seen the trailer.
*/
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "blake2s.h"

typedef int (*get_copy_data_fn)(void *conn, char **buffer, int async);
typedef void (*freemem_fn)(void *ptr);
typedef int (*consume_input_fn)(void *conn);
typedef int (*socket_fn)(const void *conn);
typedef int (*backend_pid_fn)(const void *conn);

static const unsigned char PGCOPY[19] = {'P', 'G', 'C', 'O', 'P', 'Y', '\n', 0xff, '\r', '\n', 0,
                                         0,   0,   0,   0,   0,   0,   0,    0};

#define MAX_BLOCKS 4 /* rows of up to 4 blocks (256 bytes) are hashed eight at once */
#define DIGEST 32

typedef struct {
  PyObject_HEAD void *conn;
  get_copy_data_fn get;
  freemem_fn freemem;
  consume_input_fn consume;
  int fd;
  char *pending; /* a message not yet wholly handed on, and how far it was */
  int pending_len;
  int pending_at;
  int started; /* digests: the header was seen */
  int trailer; /* digests: the trailer was seen */
  long long messages;
  double waited;
  /* digests: rows waiting to be hashed eight at once, by number of blocks */
  int waiting[MAX_BLOCKS];
  uint32_t lens[MAX_BLOCKS][LANES];
  Py_ssize_t at[MAX_BLOCKS][LANES];
  unsigned char stage[MAX_BLOCKS][LANES * 64 * MAX_BLOCKS];
} Reader;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The next CopyData message: > 0 its length (in *data, freed by the caller with freemem),
** -1 the end of the COPY, -2 or -3 a failure, 0 nothing within timeout_ms. GIL released. */
static int next_message(Reader *r, char **data, int timeout_ms) {
  for (;;) {
    int n = r->get(r->conn, data, 1);
    if (n != 0) return n;
    struct pollfd p = {r->fd, POLLIN, 0};
    double began = now();
    int ready = poll(&p, 1, timeout_ms);
    r->waited += now() - began;
    if (ready == 0) return 0;
    if (ready < 0 && errno != EINTR) return -3;
    if (r->consume(r->conn) == 0) return -3;
  }
}

/* ---- bytes ------------------------------------------------------------------------------ */

static PyObject *reader_fill(Reader *r, PyObject *args) {
  Py_buffer view;
  int timeout_ms, state = 1;
  Py_ssize_t filled = 0;
  if (!PyArg_ParseTuple(args, "w*i", &view, &timeout_ms)) return NULL;
  unsigned char *out = view.buf;
  Py_ssize_t cap = view.len;
  Py_BEGIN_ALLOW_THREADS;
  while (filled < cap) {
    if (r->pending == NULL) {
      char *data = NULL;
      int n = next_message(r, &data, timeout_ms);
      if (n <= 0) {
        state = n;
        break;
      }
      r->messages++;
      r->pending = data;
      r->pending_len = n;
      r->pending_at = 0;
    }
    Py_ssize_t left = r->pending_len - r->pending_at;
    Py_ssize_t take = left < cap - filled ? left : cap - filled;
    memcpy(out + filled, r->pending + r->pending_at, (size_t)take);
    filled += take;
    r->pending_at += (int)take;
    if (r->pending_at == r->pending_len) {
      r->freemem(r->pending);
      r->pending = NULL;
    }
  }
  Py_END_ALLOW_THREADS;
  PyBuffer_Release(&view);
  if (PyErr_CheckSignals() < 0) return NULL;
  return Py_BuildValue("(ni)", filled, state);
}

/* ---- row digests ------------------------------------------------------------------------ */

static void flush_class(Reader *r, int c, unsigned char *out) {
  unsigned char digests[LANES][32];
  int i, nblocks = c + 1;
  size_t stride = (size_t)64 * (size_t)nblocks;
  if (r->waiting[c] == 0) return;
  for (i = r->waiting[c]; i < LANES; i++) {
    r->lens[c][i] = (uint32_t)(64 * c + 1);
    memset(r->stage[c] + stride * i, 0, stride);
  }
  blake2s256_x8n(r->stage[c], nblocks, r->lens[c], digests);
  for (i = 0; i < r->waiting[c]; i++) memcpy(out + r->at[c][i], digests[i], DIGEST);
  r->waiting[c] = 0;
}

static void flush_all(Reader *r, unsigned char *out) {
  int c;
  for (c = 0; c < MAX_BLOCKS; c++) flush_class(r, c, out);
}

/* Whether `row` (n bytes) is one row of `columns` fields, ending exactly at its end. */
static int row_framed(const unsigned char *row, Py_ssize_t n, int columns) {
  Py_ssize_t at = 2;
  int i;
  if (n < 2 || (int)(int16_t)((row[0] << 8) | row[1]) != columns) return 0;
  for (i = 0; i < columns; i++) {
    if (n - at < 4) return 0;
    int32_t len = (int32_t)(((uint32_t)row[at] << 24) | ((uint32_t)row[at + 1] << 16) |
                            ((uint32_t)row[at + 2] << 8) | (uint32_t)row[at + 3]);
    at += 4;
    if (len == -1) continue;
    if (len < 0 || n - at < len) return 0;
    at += len;
  }
  return at == n;
}

static PyObject *reader_digests(Reader *r, PyObject *args) {
  Py_buffer view;
  int columns, timeout_ms, state = 1;
  const char *bad = NULL;
  Py_ssize_t filled = 0;
  if (!PyArg_ParseTuple(args, "w*ii", &view, &columns, &timeout_ms)) return NULL;
  if (view.len < DIGEST || columns < 0 || columns > 32767) {
    PyBuffer_Release(&view);
    PyErr_SetString(PyExc_ValueError, "digests: a buffer of at least one digest is needed");
    return NULL;
  }
  unsigned char *out = view.buf;
  Py_ssize_t cap = view.len - view.len % DIGEST;
  int x8 = x8_available();
  Py_BEGIN_ALLOW_THREADS;
  while (filled < cap) {
    char *data = NULL;
    int n = next_message(r, &data, timeout_ms);
    if (n <= 0) {
      state = n;
      break;
    }
    r->messages++;
    const unsigned char *row = (const unsigned char *)data;
    Py_ssize_t len = n;
    if (!r->started) {
      if (len < (Py_ssize_t)sizeof PGCOPY || memcmp(row, PGCOPY, sizeof PGCOPY) != 0) {
        r->freemem(data);
        bad = "COPY sent no binary header";
        break;
      }
      r->started = 1;
      row += sizeof PGCOPY;
      len -= (Py_ssize_t)sizeof PGCOPY;
    }
    if (r->trailer) {
      r->freemem(data);
      bad = "COPY sent data after its trailer";
      break;
    }
    if (len == 0) { /* the header alone */
      r->freemem(data);
      continue;
    }
    if (len == 2 && row[0] == 0xff && row[1] == 0xff) {
      r->trailer = 1;
      r->freemem(data);
      continue;
    }
    if (!row_framed(row, len, columns)) {
      r->freemem(data);
      bad = "COPY sent a row that is not framed as the table's columns";
      break;
    }
    int c = len == 0 ? 0 : (int)((len - 1) / 64);
    if (x8 && c < MAX_BLOCKS) {
      size_t stride = (size_t)64 * (size_t)(c + 1);
      unsigned char *slot = r->stage[c] + stride * (size_t)r->waiting[c];
      memcpy(slot, row, (size_t)len);
      memset(slot + len, 0, stride - (size_t)len);
      r->lens[c][r->waiting[c]] = (uint32_t)len;
      r->at[c][r->waiting[c]] = filled;
      if (++r->waiting[c] == LANES) flush_class(r, c, out);
    } else {
      blake2s256(row, (uint64_t)len, out + filled);
    }
    filled += DIGEST;
    r->freemem(data);
  }
  flush_all(r, out);
  Py_END_ALLOW_THREADS;
  PyBuffer_Release(&view);
  if (bad != NULL) {
    PyErr_SetString(PyExc_ValueError, bad);
    return NULL;
  }
  if (PyErr_CheckSignals() < 0) return NULL;
  return Py_BuildValue("(ni)", filled, state);
}

/* ---- the type ---------------------------------------------------------------------------- */

static int reader_init(Reader *r, PyObject *args, PyObject *kwds) {
  static char *names[] = {"conn", "functions", "socket", "backend_pid", NULL};
  unsigned long long conn, get, freemem, consume, sock, pid;
  int fd, backend_pid;
  if (!PyArg_ParseTupleAndKeywords(args, kwds, "K(KKKKK)ii", names, &conn, &get, &freemem,
                                   &consume, &sock, &pid, &fd, &backend_pid))
    return -1;
  if (!conn || !get || !freemem || !consume || !sock || !pid) {
    PyErr_SetString(PyExc_ValueError, "Reader: a null connection or function");
    return -1;
  }
  if (r->pending != NULL) {
    PyErr_SetString(PyExc_ValueError, "Reader: already reading");
    return -1;
  }
  void *c = (void *)(uintptr_t)conn;
  if (((socket_fn)(uintptr_t)sock)(c) != fd || ((backend_pid_fn)(uintptr_t)pid)(c) != backend_pid) {
    PyErr_SetString(PyExc_ValueError,
                    "Reader: these libpq functions do not see this connection as psycopg does");
    return -1;
  }
  r->conn = c;
  r->get = (get_copy_data_fn)(uintptr_t)get;
  r->freemem = (freemem_fn)(uintptr_t)freemem;
  r->consume = (consume_input_fn)(uintptr_t)consume;
  r->fd = fd;
  return 0;
}

static void reader_dealloc(Reader *r) {
  if (r->pending != NULL && r->freemem != NULL) r->freemem(r->pending);
  Py_TYPE(r)->tp_free((PyObject *)r);
}

static PyObject *reader_messages(Reader *r, void *closure) {
  (void)closure;
  return PyLong_FromLongLong(r->messages);
}

static PyObject *reader_waited(Reader *r, void *closure) {
  (void)closure;
  return PyFloat_FromDouble(r->waited);
}

static PyObject *reader_trailer(Reader *r, void *closure) {
  (void)closure;
  return PyBool_FromLong(r->trailer);
}

static PyMethodDef reader_methods[] = {
    {"fill", (PyCFunction)reader_fill, METH_VARARGS,
     "fill(buffer, timeout_ms) -> (filled, state): the COPY stream's bytes."},
    {"digests", (PyCFunction)reader_digests, METH_VARARGS,
     "digests(buffer, columns, timeout_ms) -> (filled, state): a digest for each row."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef reader_getset[] = {
    {"messages", (getter)reader_messages, NULL, "CopyData messages taken", NULL},
    {"waited", (getter)reader_waited, NULL, "seconds spent waiting for the server", NULL},
    {"trailer", (getter)reader_trailer, NULL, "whether digests() has seen the trailer", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "rollproof.engines.postgres._pgcopy.Reader",
    .tp_basicsize = sizeof(Reader),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "libpq's COPY OUT loop in C, for one COPY of one connection.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)reader_init,
    .tp_dealloc = (destructor)reader_dealloc,
    .tp_methods = reader_methods,
    .tp_getset = reader_getset,
};

static PyObject *blake2s_eight(PyObject *self, PyObject *args) {
  /* blake2s(data) -> the digest through the eight-lane path when `x8` is true and this CPU has
  ** it (a test hook: both paths must give hashlib's digest). */
  Py_buffer view;
  int x8;
  unsigned char out[DIGEST];
  (void)self;
  if (!PyArg_ParseTuple(args, "y*p", &view, &x8)) return NULL;
  if (x8 && x8_available() && view.len <= 64 * MAX_BLOCKS) {
    unsigned char stage[LANES * 64 * MAX_BLOCKS];
    unsigned char digests[LANES][32];
    uint32_t lens[LANES];
    int i, nblocks = view.len == 0 ? 1 : (int)((view.len + 63) / 64);
    size_t stride = (size_t)64 * (size_t)nblocks;
    memset(stage, 0, sizeof stage);
    for (i = 0; i < LANES; i++) {
      memcpy(stage + stride * i, view.buf, (size_t)view.len);
      lens[i] = (uint32_t)view.len;
    }
    blake2s256_x8n(stage, nblocks, lens, digests);
    for (i = 1; i < LANES; i++) {
      if (memcmp(digests[i], digests[0], DIGEST) != 0) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_AssertionError, "the eight lanes disagree");
        return NULL;
      }
    }
    memcpy(out, digests[0], DIGEST);
  } else {
    blake2s256(view.buf, (uint64_t)view.len, out);
  }
  PyBuffer_Release(&view);
  return PyBytes_FromStringAndSize((const char *)out, DIGEST);
}

static PyMethodDef module_methods[] = {
    {"blake2s", blake2s_eight, METH_VARARGS,
     "blake2s(data, x8) -> bytes: BLAKE2s-256 of data, eight lanes at once when x8."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_pgcopy", "libpq's binary COPY OUT loop in C (csrc/pgcopy.c).", -1,
    module_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__pgcopy(void) {
  PyObject *m;
  if (PyType_Ready(&ReaderType) < 0) return NULL;
  m = PyModule_Create(&module);
  if (m == NULL) return NULL;
  Py_INCREF(&ReaderType);
  if (PyModule_AddObject(m, "Reader", (PyObject *)&ReaderType) < 0) {
    Py_DECREF(&ReaderType);
    Py_DECREF(m);
    return NULL;
  }
  if (PyModule_AddIntConstant(m, "X8", x8_available()) < 0) {
    Py_DECREF(m);
    return NULL;
  }
  return m;
}
