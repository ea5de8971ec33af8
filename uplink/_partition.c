/* The Java client's default partitioner for keyed records: murmur2 of the key, made positive,
 * modulo the partition count (org.apache.kafka.common.utils.Utils.murmur2 and toPositive).
 *
 * aiokafka ships it in pure Python, about 3 % of an ingress request's CPU at the benchmark's
 * rate (bench/RESULTS.md, "Ingress load"); every key is hashed once per record, and keys are
 * conversations, too many to memoise. The result must equal the Java client's, so that records
 * of one conversation land on the partition any other Kafka producer would pick.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

static uint32_t
murmur2_hash(const unsigned char *data, Py_ssize_t length)
{
    const uint32_t seed = 0x9747b28cU;
    const uint32_t m = 0x5bd1e995U;
    const int r = 24;
    uint32_t h = seed ^ (uint32_t)length;
    Py_ssize_t length4 = length / 4;

    for (Py_ssize_t i = 0; i < length4; i++) {
        const unsigned char *p = data + i * 4;
        uint32_t k = (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
                     ((uint32_t)p[3] << 24);
        k *= m;
        k ^= k >> r;
        k *= m;
        h *= m;
        h ^= k;
    }
    const unsigned char *tail = data + (length & ~(Py_ssize_t)3);
    switch (length % 4) {
    case 3:
        h ^= (uint32_t)tail[2] << 16;
        /* fall through */
    case 2:
        h ^= (uint32_t)tail[1] << 8;
        /* fall through */
    case 1:
        h ^= (uint32_t)tail[0];
        h *= m;
    }
    h ^= h >> 13;
    h *= m;
    h ^= h >> 15;
    return h;
}

PyDoc_STRVAR(murmur2_doc,
"murmur2(data, /) -> int\n"
"\n"
"Kafka's murmur2 of `data` as an unsigned 32-bit int (aiokafka.partitioner.murmur2's value).");

static PyObject *
murmur2(PyObject *module, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    uint32_t h = murmur2_hash(view.buf, view.len);
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLong(h);
}

PyDoc_STRVAR(partition_doc,
"partition(key, count, /) -> int\n"
"\n"
"The partition of `count` the Java client's default partitioner gives a record keyed `key`:\n"
"(murmur2(key) & 0x7fffffff) % count.");

static PyObject *
partition(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "partition() takes exactly 2 arguments (key, count)");
        return NULL;
    }
    Py_ssize_t count = PyLong_AsSsize_t(args[1]);
    if (count == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (count <= 0) {
        PyErr_SetString(PyExc_ValueError, "count must be > 0");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    uint32_t h = murmur2_hash(view.buf, view.len);
    PyBuffer_Release(&view);
    return PyLong_FromSsize_t((Py_ssize_t)(h & 0x7fffffffU) % count);
}

static PyMethodDef methods[] = {
    {"murmur2", (PyCFunction)murmur2, METH_O, murmur2_doc},
    {"partition", (PyCFunction)(void (*)(void))partition, METH_FASTCALL, partition_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "uplink._partition",
    .m_doc = "The Java client's partitioner for keyed records, in C (see _partition.c).",
    .m_size = 0,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__partition(void)
{
    return PyModuleDef_Init(&module);
}
