/* The per-record work of the workers' hot path, done in C for a whole fetched batch at once.
 *
 * heads(): a push record's leading fields (messageId, timestamp), for schemas/head.py. Every
 * worker reads the head of every record it judges, so its cost adds to every record fetched
 * (bench/RESULTS.md, "Codec paths").
 * join(): record values' datums concatenated, for the archive's container blocks
 * (schemas/container.py), without a copy per record on the event loop.
 *
 * A value starts with one of the writer headers heads() is given: the 10-byte single-object
 * header (marker and fingerprint) or the 5-byte Confluent one (magic 0, schema id), of each writer
 * schema the reader knows whose datum starts with (push.avsc, checked by HeadReader.fits):  appId ["null","string"], channelType ["null","int"], messageId string,
 * timestamp ["null","long"].  Varints are read as fastavro reads them (64-bit, zig-zag, at most
 * 10 bytes); every read is bounds-checked: the bytes are untrusted.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define HEADER_SIZE 10 /* the longest header: single-object */

typedef struct {
    const unsigned char *data;
    Py_ssize_t size;
    Py_ssize_t pos;
    const char *why; /* set when a read fails */
    const char *field;
} Cursor;

static int
read_long(Cursor *c, int64_t *out)
{
    uint64_t result = 0;
    int shift = 0;
    for (;;) {
        if (c->pos >= c->size) {
            c->why = "the datum ends inside";
            return -1;
        }
        unsigned char byte = c->data[c->pos++];
        result |= (uint64_t)(byte & 0x7F) << shift;
        if (byte < 0x80) {
            break;
        }
        shift += 7;
        if (shift > 63) {
            c->why = "a varint longer than 10 bytes in";
            return -1;
        }
    }
    *out = (int64_t)((result >> 1) ^ (~(result & 1) + 1));
    return 0;
}

/* A union of null and one other type: 0 for null, 1 for the other branch, -1 on error. */
static int
read_branch(Cursor *c)
{
    int64_t branch;
    if (read_long(c, &branch) < 0) {
        return -1;
    }
    if (branch != 0 && branch != 1) {
        c->why = "no such union branch in";
        return -1;
    }
    return (int)branch;
}

/* A string's bytes: *start and *length; -1 on error. */
static int
read_string(Cursor *c, Py_ssize_t *start, Py_ssize_t *length)
{
    int64_t size;
    if (read_long(c, &size) < 0) {
        return -1;
    }
    if (size < 0) {
        c->why = "a negative length in";
        return -1;
    }
    if (size > c->size - c->pos) {
        c->why = "the datum ends inside";
        return -1;
    }
    *start = c->pos;
    *length = (Py_ssize_t)size;
    c->pos += (Py_ssize_t)size;
    return 0;
}

/* Reads one value's head: 0 with new references in *message_id and *stamp, 1 with a new reference
 * in *reason (why it has none), -1 on an error of Python's own (memory). */
typedef struct {
    const char **bytes; /* borrowed from the caller's tuple */
    Py_ssize_t *sizes;
    Py_ssize_t count;
} Headers;

/* The length of the known header `data` starts with, 0 for none. The first header is the one
 * most records carry: one memcmp for them. */
static Py_ssize_t
header_of(const Headers *headers, const unsigned char *data, Py_ssize_t size)
{
    for (Py_ssize_t i = 0; i < headers->count; i++) {
        Py_ssize_t length = headers->sizes[i];
        if (size >= length && memcmp(data, headers->bytes[i], (size_t)length) == 0) {
            return length;
        }
    }
    return 0;
}

static int
head_of(PyObject *value, const Headers *headers, PyObject **message_id, PyObject **stamp,
        PyObject **reason)
{
    if (!PyBytes_Check(value)) {
        *reason = PyUnicode_FromString(value == Py_None ? "no value" : "the value is not bytes");
        return *reason == NULL ? -1 : 1;
    }
    Cursor c = {(const unsigned char *)PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value), 0,
                NULL, NULL};
    c.pos = header_of(headers, c.data, c.size);
    if (c.pos == 0) {
        PyObject *start = PyBytes_FromStringAndSize(
            (const char *)c.data, c.size < HEADER_SIZE ? c.size : HEADER_SIZE);
        if (start == NULL) {
            return -1;
        }
        PyObject *hex = PyObject_CallMethod(start, "hex", NULL);
        Py_DECREF(start);
        if (hex == NULL) {
            return -1;
        }
        *reason = PyUnicode_FromFormat("not a push record of this schema (header %U)", hex);
        Py_DECREF(hex);
        return *reason == NULL ? -1 : 1;
    }
    Py_ssize_t start, length;
    int64_t skipped;
    int branch;

    c.field = "appId";
    if ((branch = read_branch(&c)) < 0 || (branch == 1 && read_string(&c, &start, &length) < 0)) {
        goto corrupt;
    }
    c.field = "channelType";
    if ((branch = read_branch(&c)) < 0 || (branch == 1 && read_long(&c, &skipped) < 0)) {
        goto corrupt;
    }
    c.field = "messageId";
    if (read_string(&c, &start, &length) < 0) {
        goto corrupt;
    }
    c.field = "timestamp";
    if ((branch = read_branch(&c)) < 0) {
        goto corrupt;
    }
    int64_t timestamp = 0;
    if (branch == 1 && read_long(&c, &timestamp) < 0) {
        goto corrupt;
    }
    *message_id = PyUnicode_DecodeUTF8((const char *)c.data + start, length, "strict");
    if (*message_id == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
            return -1;
        }
        PyErr_Clear();
        *reason = PyUnicode_FromString("undecodable datum head: messageId is not UTF-8");
        return *reason == NULL ? -1 : 1;
    }
    *stamp = branch == 1 ? PyLong_FromLongLong(timestamp) : Py_NewRef(Py_None);
    if (*stamp == NULL) {
        Py_CLEAR(*message_id);
        return -1;
    }
    return 0;

corrupt:
    *reason = PyUnicode_FromFormat("undecodable datum head: %s %s", c.why, c.field);
    return *reason == NULL ? -1 : 1;
}

/* Appends and gives up the reference; -1 on error. */
static int
append_stolen(PyObject *list, PyObject *item)
{
    int failed = item == NULL || PyList_Append(list, item) < 0;
    Py_XDECREF(item);
    return failed ? -1 : 0;
}

PyDoc_STRVAR(heads_doc,
"heads(headers, values, /) -> (ids, stamps, failed)\n"
"\n"
"The heads of a batch by column: the messageIds and event timestamps (or None) of the values\n"
"that have one, in order, and (index, why) for each value that has none (not bytes, none of\n"
"the `headers` (a tuple of 5- or 10-byte writer headers, most frequent first), a corrupt\n"
"leading field).");

static PyObject *
heads(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "heads() takes exactly 2 arguments (headers, values)");
        return NULL;
    }
    if (!PyTuple_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "headers must be a tuple of bytes");
        return NULL;
    }
    Headers headers;
    headers.count = PyTuple_GET_SIZE(args[0]);
    /* One allocation for both arrays (at least one byte, so NULL means no memory). */
    size_t each = sizeof(char *) + sizeof(Py_ssize_t);
    void *memory = PyMem_Malloc((size_t)headers.count * each + 1);
    if (memory == NULL) {
        return PyErr_NoMemory();
    }
    headers.bytes = (const char **)memory;
    headers.sizes = (Py_ssize_t *)(headers.bytes + headers.count);
    for (Py_ssize_t i = 0; i < headers.count; i++) {
        PyObject *item = PyTuple_GET_ITEM(args[0], i);
        if (!PyBytes_Check(item) || PyBytes_GET_SIZE(item) < 1 ||
            PyBytes_GET_SIZE(item) > HEADER_SIZE) {
            PyMem_Free(memory);
            PyErr_SetString(PyExc_ValueError, "each header must be 1 to 10 bytes");
            return NULL;
        }
        headers.bytes[i] = PyBytes_AS_STRING(item);
        headers.sizes[i] = PyBytes_GET_SIZE(item);
    }
    /* `headers` borrows from the tuple, which the caller holds for the whole call. */
    PyObject *values = PySequence_Fast(args[1], "values must be a sequence");
    if (values == NULL) {
        PyMem_Free(memory);
        return NULL;
    }
    Py_ssize_t count = PySequence_Fast_GET_SIZE(values);
    PyObject **items = PySequence_Fast_ITEMS(values);
    PyObject *ids = PyList_New(0);
    PyObject *stamps = PyList_New(0);
    PyObject *failed = PyList_New(0);
    if (ids == NULL || stamps == NULL || failed == NULL) {
        goto error;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *message_id = NULL, *stamp = NULL, *reason = NULL;
        int found = head_of(items[i], &headers, &message_id, &stamp, &reason);
        if (found < 0) {
            goto error;
        }
        if (found == 0) {
            if (append_stolen(ids, message_id) < 0) {
                Py_DECREF(stamp);
                goto error;
            }
            if (append_stolen(stamps, stamp) < 0) {
                goto error;
            }
        }
        else if (append_stolen(failed, Py_BuildValue("(nN)", i, reason)) < 0) {
            goto error;
        }
    }
    Py_DECREF(values);
    PyMem_Free(memory);
    return Py_BuildValue("(NNN)", ids, stamps, failed);

error:
    Py_DECREF(values);
    PyMem_Free(memory);
    Py_XDECREF(ids);
    Py_XDECREF(stamps);
    Py_XDECREF(failed);
    return NULL;
}

PyDoc_STRVAR(join_doc,
"join(values, skip, /) -> bytes\n"
"\n"
"The values (bytes, each at least `skip` long) without their first `skip` bytes, concatenated:\n"
"b''.join(v[skip:] for v in values) without a copy per value, and without the GIL while copying.");

static PyObject *
join(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "join() takes exactly 2 arguments (values, skip)");
        return NULL;
    }
    Py_ssize_t skip = PyLong_AsSsize_t(args[1]);
    if (skip == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (skip < 0) {
        PyErr_SetString(PyExc_ValueError, "skip must be >= 0");
        return NULL;
    }
    /* A tuple: its items stay referenced and in place while the copy runs without the GIL. */
    PyObject *values = PySequence_Tuple(args[0]);
    if (values == NULL) {
        return NULL;
    }
    Py_ssize_t count = PySequence_Fast_GET_SIZE(values);
    PyObject **items = PySequence_Fast_ITEMS(values);
    Py_ssize_t total = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        if (!PyBytes_Check(items[i]) || PyBytes_GET_SIZE(items[i]) < skip) {
            PyErr_Format(PyExc_ValueError, "values[%zd] is not bytes of %zd bytes or more", i,
                         skip);
            Py_DECREF(values);
            return NULL;
        }
        total += PyBytes_GET_SIZE(items[i]) - skip;
    }
    PyObject *joined = PyBytes_FromStringAndSize(NULL, total);
    if (joined == NULL) {
        Py_DECREF(values);
        return NULL;
    }
    char *out = PyBytes_AS_STRING(joined);
    /* `values` holds every item, and bytes never change: safe without the GIL. */
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_ssize_t size = PyBytes_GET_SIZE(items[i]) - skip;
        memcpy(out, PyBytes_AS_STRING(items[i]) + skip, (size_t)size);
        out += size;
    }
    Py_END_ALLOW_THREADS
    Py_DECREF(values);
    return joined;
}

static PyMethodDef methods[] = {
    {"heads", (PyCFunction)(void (*)(void))heads, METH_FASTCALL, heads_doc},
    {"join", (PyCFunction)(void (*)(void))join, METH_FASTCALL, join_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "schemas._records",
    .m_doc = "Push record heads and datums for a whole batch (see head.py, container.py).",
    .m_size = 0,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__records(void)
{
    return PyModuleDef_Init(&module);
}
