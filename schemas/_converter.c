/* The JSON body → typed record walk of schemas/converter.py, its common cases in C.
 *
 * converter.py compiles a converter per schema node; as Python closures a push takes a call
 * per nested object and per field. Here one C call walks the same nodes and takes the common
 * case of each itself: a str where a string is expected, an int in range where an int is, a
 * bool, an object whose keys are all fields, a list. Anything else (a number where a string is expected, a key with stray spaces, a value
 * for a coerced field, ...) goes to that node's Python converter, so the result is always the
 * Python converter's (tests/schemas/test_properties.py compares both on generated bodies).
 *
 * Nodes are tuples built by converter.py, each ending with its Python converter:
 *   (STRING, py) (INT, low, high, py) (BOOLEAN, py) (OTHER, py)
 *   (RECORD, fields: dict name -> node, template: dict, py)
 *   (ARRAY, item_node, py)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

enum { NODE_STRING, NODE_INT, NODE_BOOLEAN, NODE_OTHER, NODE_RECORD, NODE_ARRAY };

static PyObject *convert_node(PyObject *node, PyObject *value);

static PyObject *
fallback(PyObject *node, PyObject *value)
{
    PyObject *py = PyTuple_GET_ITEM(node, PyTuple_GET_SIZE(node) - 1);
    return PyObject_CallOneArg(py, value);
}

static PyObject *
convert_record(PyObject *node, PyObject *value)
{
    if (!PyDict_CheckExact(value)) {
        Py_RETURN_NONE;
    }
    PyObject *fields = PyTuple_GET_ITEM(node, 1);
    /* Every key a field: else the Python converter decides (stray spaces, unknown keys). */
    PyObject *key, *item;
    Py_ssize_t pos = 0;
    while (PyDict_Next(value, &pos, &key, &item)) {
        if (!PyUnicode_CheckExact(key) || !PyDict_GetItemWithError(fields, key)) {
            if (PyErr_Occurred()) {
                return NULL;
            }
            return fallback(node, value);
        }
    }
    PyObject *out = PyDict_Copy(PyTuple_GET_ITEM(node, 2));
    if (out == NULL) {
        return NULL;
    }
    pos = 0;
    while (PyDict_Next(value, &pos, &key, &item)) {
        PyObject *converted = convert_node(PyDict_GetItem(fields, key), item);
        if (converted == NULL || PyDict_SetItem(out, key, converted) < 0) {
            Py_XDECREF(converted);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(converted);
    }
    return out;
}

static PyObject *
convert_array(PyObject *node, PyObject *value)
{
    if (!PyList_CheckExact(value)) {
        Py_RETURN_NONE;
    }
    PyObject *item_node = PyTuple_GET_ITEM(node, 1);
    Py_ssize_t count = PyList_GET_SIZE(value);
    PyObject *out = PyList_New(0);
    if (out == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < count && i < PyList_GET_SIZE(value); i++) {
        PyObject *element = PyList_GET_ITEM(value, i);
        Py_INCREF(element); /* a Python fallback could change the list meanwhile */
        PyObject *converted = convert_node(item_node, element);
        Py_DECREF(element);
        if (converted == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        /* An item of the wrong shape is dropped from the typed view (it stays in raw). */
        if (converted != Py_None && PyList_Append(out, converted) < 0) {
            Py_DECREF(converted);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(converted);
    }
    return out;
}

static PyObject *
convert_node(PyObject *node, PyObject *value)
{
    switch (PyLong_AsLong(PyTuple_GET_ITEM(node, 0))) {
    case NODE_STRING:
        if (PyUnicode_CheckExact(value)) {
            return Py_NewRef(value);
        }
        if (value == Py_None) {
            Py_RETURN_NONE;
        }
        return fallback(node, value);
    case NODE_INT:
        if (PyLong_CheckExact(value)) {
            /* In range: low <= value <= high (compared as Python ints: no overflow). */
            int low = PyObject_RichCompareBool(PyTuple_GET_ITEM(node, 1), value, Py_LE);
            if (low < 0) {
                return NULL;
            }
            int high = low ? PyObject_RichCompareBool(value, PyTuple_GET_ITEM(node, 2), Py_LE)
                           : 0;
            if (high < 0) {
                return NULL;
            }
            if (low && high) {
                return Py_NewRef(value);
            }
            Py_RETURN_NONE;
        }
        if (value == Py_None) {
            Py_RETURN_NONE;
        }
        return fallback(node, value);
    case NODE_BOOLEAN:
        if (PyBool_Check(value)) {
            return Py_NewRef(value);
        }
        if (value == Py_None) {
            Py_RETURN_NONE;
        }
        return fallback(node, value);
    case NODE_RECORD:
        return convert_record(node, value);
    case NODE_ARRAY:
        return convert_array(node, value);
    case NODE_OTHER:
        return fallback(node, value);
    default:
        if (PyErr_Occurred()) {
            return NULL;
        }
        PyErr_SetString(PyExc_ValueError, "not a converter node");
        return NULL;
    }
}

PyDoc_STRVAR(convert_doc,
"convert(node, value, /) -> typed value or None\n"
"\n"
"What the Python converter of `node` gives for `value` (see _converter.c, converter.py).");

static PyObject *
convert(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyTuple_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "convert(node: tuple, value)");
        return NULL;
    }
    return convert_node(args[0], args[1]);
}

static PyMethodDef methods[] = {
    {"convert", (PyCFunction)(void (*)(void))convert, METH_FASTCALL, convert_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "schemas._converter",
    .m_doc = "The JSON body -> typed record walk, its common cases in C (see _converter.c).",
    .m_size = 0,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__converter(void)
{
    return PyModuleDef_Init(&module);
}
