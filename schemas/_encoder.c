/* Avro binary encoding of a datum by a program compiled from its schema (schemas/encoder.py).
 *
 * The ingress encodes every push on its hot path. As Python closures a push takes a call per
 * record, union and field; here one C call walks the same program (bench/RESULTS.md, "Codec
 * paths"). The program is
 * nested tuples, built and checked once by encoder.py:
 *
 *   (NULL,) (BOOLEAN,) (LONG,) (STRING,) (BYTES,)
 *   (RECORD, ((name, program), ...))
 *   (ARRAY, item_program)
 *   (UNION, null_index, other_program)      [null, T] or [T, null]
 *
 * Output is byte-identical to the Python encoder and to fastavro (tests/schemas).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

enum { NODE_NULL, NODE_BOOLEAN, NODE_LONG, NODE_STRING, NODE_BYTES, NODE_RECORD, NODE_ARRAY,
       NODE_UNION };

typedef struct {
    char *data;
    Py_ssize_t size;
    Py_ssize_t capacity;
} Buffer;

static int
reserve(Buffer *out, Py_ssize_t extra)
{
    if (out->size + extra <= out->capacity) {
        return 0;
    }
    Py_ssize_t capacity = out->capacity * 2;
    if (capacity < out->size + extra) {
        capacity = out->size + extra;
    }
    char *data = PyMem_Realloc(out->data, (size_t)capacity);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    out->data = data;
    out->capacity = capacity;
    return 0;
}

static int
put(Buffer *out, const char *bytes, Py_ssize_t size)
{
    if (reserve(out, size) < 0) {
        return -1;
    }
    memcpy(out->data + out->size, bytes, (size_t)size);
    out->size += size;
    return 0;
}

static int
put_long(Buffer *out, int64_t value)
{
    if (reserve(out, 10) < 0) {
        return -1;
    }
    uint64_t n = ((uint64_t)value << 1) ^ (uint64_t)(value >> 63);
    unsigned char *p = (unsigned char *)out->data + out->size;
    while (n & ~(uint64_t)0x7f) {
        *p++ = (unsigned char)((n & 0x7f) | 0x80);
        n >>= 7;
    }
    *p++ = (unsigned char)n;
    out->size = (char *)p - out->data;
    return 0;
}

static int encode_node(PyObject *program, PyObject *value, Buffer *out, int depth);

static int
wrong_type(const char *expected, PyObject *value)
{
    PyErr_Format(PyExc_TypeError, "expected %s, got %.100s", expected, Py_TYPE(value)->tp_name);
    return -1;
}

static int
encode_record(PyObject *fields, PyObject *value, Buffer *out, int depth)
{
    if (!PyDict_Check(value)) {
        return wrong_type("a dict for a record", value);
    }
    Py_ssize_t count = PyTuple_GET_SIZE(fields);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *field = PyTuple_GET_ITEM(fields, i);
        PyObject *item = PyDict_GetItemWithError(value, PyTuple_GET_ITEM(field, 0));
        if (item == NULL) {
            if (PyErr_Occurred()) {
                return -1;
            }
            item = Py_None; /* a missing field is None, as dict.get gives it */
        }
        if (encode_node(PyTuple_GET_ITEM(field, 1), item, out, depth + 1) < 0) {
            return -1;
        }
    }
    return 0;
}

static int
encode_node(PyObject *program, PyObject *value, Buffer *out, int depth)
{
    if (depth > 64) {
        PyErr_SetString(PyExc_ValueError, "datum nested deeper than 64 levels");
        return -1;
    }
    long kind = PyLong_AsLong(PyTuple_GET_ITEM(program, 0));
    switch (kind) {
    case NODE_NULL:
        return 0;
    case NODE_BOOLEAN: {
        int truth = PyObject_IsTrue(value);
        if (truth < 0) {
            return -1;
        }
        char byte = truth ? 1 : 0;
        return put(out, &byte, 1);
    }
    case NODE_LONG: {
        if (!PyLong_Check(value)) {
            return wrong_type("an int", value);
        }
        long long n = PyLong_AsLongLong(value);
        if (n == -1 && PyErr_Occurred()) {
            return -1;
        }
        return put_long(out, (int64_t)n);
    }
    case NODE_STRING: {
        if (!PyUnicode_Check(value)) {
            return wrong_type("a str", value);
        }
        Py_ssize_t size;
        const char *data = PyUnicode_AsUTF8AndSize(value, &size);
        if (data == NULL) {
            return -1;
        }
        if (put_long(out, size) < 0) {
            return -1;
        }
        return put(out, data, size);
    }
    case NODE_BYTES: {
        if (!PyBytes_Check(value)) {
            return wrong_type("bytes", value);
        }
        Py_ssize_t size = PyBytes_GET_SIZE(value);
        if (put_long(out, size) < 0) {
            return -1;
        }
        return put(out, PyBytes_AS_STRING(value), size);
    }
    case NODE_RECORD:
        return encode_record(PyTuple_GET_ITEM(program, 1), value, out, depth);
    case NODE_ARRAY: {
        if (!PyList_Check(value)) {
            return wrong_type("a list", value);
        }
        PyObject *item = PyTuple_GET_ITEM(program, 1);
        Py_ssize_t count = PyList_GET_SIZE(value);
        if (count > 0) {
            if (put_long(out, count) < 0) {
                return -1;
            }
            for (Py_ssize_t i = 0; i < count; i++) {
                /* The list cannot change meanwhile: the GIL is held and nothing runs Python. */
                if (encode_node(item, PyList_GET_ITEM(value, i), out, depth + 1) < 0) {
                    return -1;
                }
            }
        }
        return put(out, "\0", 1);
    }
    case NODE_UNION: {
        long null_index = PyLong_AsLong(PyTuple_GET_ITEM(program, 1));
        if (value == Py_None) {
            return put(out, null_index == 0 ? "\0" : "\2", 1);
        }
        if (put(out, null_index == 0 ? "\2" : "\0", 1) < 0) {
            return -1;
        }
        return encode_node(PyTuple_GET_ITEM(program, 2), value, out, depth + 1);
    }
    default:
        PyErr_Format(PyExc_ValueError, "not an encoder program node: %ld", kind);
        return -1;
    }
}

PyDoc_STRVAR(encode_doc,
"encode(program, prefix, datum, /) -> bytes\n"
"\n"
"`prefix` followed by the Avro binary encoding of `datum` by `program` (see encoder.py).");

static PyObject *
encode(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "encode() takes exactly 3 arguments");
        return NULL;
    }
    if (!PyTuple_Check(args[0]) || !PyBytes_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "encode(program: tuple, prefix: bytes, datum)");
        return NULL;
    }
    Buffer out = {NULL, 0, 0};
    if (reserve(&out, 1024) < 0 || put(&out, PyBytes_AS_STRING(args[1]),
                                       PyBytes_GET_SIZE(args[1])) < 0) {
        PyMem_Free(out.data);
        return NULL;
    }
    if (encode_node(args[0], args[2], &out, 0) < 0) {
        PyMem_Free(out.data);
        return NULL;
    }
    PyObject *result = PyBytes_FromStringAndSize(out.data, out.size);
    PyMem_Free(out.data);
    return result;
}

static PyMethodDef methods[] = {
    {"encode", (PyCFunction)(void (*)(void))encode, METH_FASTCALL, encode_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "schemas._encoder",
    .m_doc = "Avro binary encoding by a compiled program (see _encoder.c, encoder.py).",
    .m_size = 0,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__encoder(void)
{
    return PyModuleDef_Init(&module);
}
