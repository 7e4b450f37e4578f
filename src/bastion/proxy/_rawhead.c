/* The byte scans of proxy/raw_head.py, in C.
 *
 * Written by hand because nothing else does this cheaply on the hot path: compiled by
 * mypyc, each `bytes` method call of the Python version (find, split, lower) costs more
 * to dispatch and to parse its arguments than the search itself, and a byte loop costs
 * some twenty instructions a byte; these two functions do the same in a few hundred
 * instructions a head. raw_head.py holds the Python twin of each (`locate_head`,
 * `scan_head`), used where this module is not built (the pure build); the tests check
 * that both give identical results on random and structured heads.
 *
 * `scan` also leaves out the lines a route's header rules remove, given as tuples of
 * lowercase names and name prefixes (policies/fields.FieldEdit), compared with the line's
 * name case-insensitively.
 *
 * Both only ever read bytes llhttp has already accepted as a response head (strict mode:
 * CR LF line ends, no obs-fold, no whitespace before a colon, no control byte in a
 * value), and both refuse (return -1 / None) rather than guess when the bytes are not
 * what that promises.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#define MAX_NAMES 64
#define MAX_NAME 32
#define MAX_PLAIN 8

/* the field names the scan acts on, lowercase, and what each is (configure()) */
struct name_kind {
    char name[MAX_NAME];
    Py_ssize_t size;
    long kind;
};
static struct name_kind names[MAX_NAMES];
static int name_count = 0;
/* Connection values that name no other field, compared exactly */
struct plain_value {
    char value[MAX_NAME];
    Py_ssize_t size;
};
static struct plain_value plain[MAX_PLAIN];
static int plain_count = 0;
static long KIND_KEEP, KIND_LENGTH, KIND_DATE, KIND_CHUNKED, KIND_CONNECTION;
/* set for each (name length, first letter) pair of a name above: most lines are kept
 * without their name being lowercased and compared (letters differ in bit 5 by case) */
static unsigned char candidate[MAX_NAME * 32];
static int configured = 0;

/* The tables are built aside and installed whole once every argument has been read: a
 * call that fails leaves the scans with the tables they had. The kinds must be ints
 * proper, so that no Python code (an __index__) runs while a name borrowed from the dict
 * is being copied. */
static PyObject *
configure(PyObject *self, PyObject *args)
{
    PyObject *kinds, *plains, *key, *value;
    Py_ssize_t pos = 0;
    long keep, length, date, chunked, connection;
    struct name_kind new_names[MAX_NAMES];
    struct plain_value new_plain[MAX_PLAIN];
    unsigned char new_candidate[MAX_NAME * 32];
    int new_name_count = 0, new_plain_count = 0;
    if (!PyArg_ParseTuple(args, "O!O(lllll)", &PyDict_Type, &kinds, &plains, &keep, &length,
                          &date, &chunked, &connection))
        return NULL;
    memset(new_candidate, 0, sizeof(new_candidate));
    while (PyDict_Next(kinds, &pos, &key, &value)) {
        if (!PyBytes_Check(key) || PyBytes_GET_SIZE(key) >= MAX_NAME || new_name_count >= MAX_NAMES) {
            PyErr_SetString(PyExc_ValueError, "field names must be short bytes");
            return NULL;
        }
        if (!PyLong_Check(value)) {
            PyErr_SetString(PyExc_TypeError, "field kinds must be ints");
            return NULL;
        }
        long kind = PyLong_AsLong(value);
        if (kind == -1 && PyErr_Occurred())
            return NULL;
        memcpy(new_names[new_name_count].name, PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key));
        new_names[new_name_count].size = PyBytes_GET_SIZE(key);
        new_names[new_name_count].kind = kind;
        if (PyBytes_GET_SIZE(key) > 0)
            new_candidate[PyBytes_GET_SIZE(key) << 5 | (PyBytes_AS_STRING(key)[0] & 31)] = 1;
        new_name_count++;
    }
    PyObject *iter = PyObject_GetIter(plains);
    if (iter == NULL)
        return NULL;
    while ((value = PyIter_Next(iter)) != NULL) {
        if (!PyBytes_Check(value) || PyBytes_GET_SIZE(value) >= MAX_NAME || new_plain_count >= MAX_PLAIN) {
            Py_DECREF(value);
            Py_DECREF(iter);
            PyErr_SetString(PyExc_ValueError, "Connection values must be short bytes");
            return NULL;
        }
        memcpy(new_plain[new_plain_count].value, PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value));
        new_plain[new_plain_count].size = PyBytes_GET_SIZE(value);
        new_plain_count++;
        Py_DECREF(value);
    }
    Py_DECREF(iter);
    if (PyErr_Occurred())
        return NULL;
    memcpy(names, new_names, sizeof(new_names[0]) * (size_t)new_name_count);
    name_count = new_name_count;
    memcpy(plain, new_plain, sizeof(new_plain[0]) * (size_t)new_plain_count);
    plain_count = new_plain_count;
    memcpy(candidate, new_candidate, sizeof(candidate));
    KIND_KEEP = keep;
    KIND_LENGTH = length;
    KIND_DATE = date;
    KIND_CHUNKED = chunked;
    KIND_CONNECTION = connection;
    configured = 1;
    Py_RETURN_NONE;
}

/* (first, second), both new references it takes over; NULL (both released) when either
 * is NULL or the tuple cannot be made */
static PyObject *
tuple2(PyObject *first, PyObject *second)
{
    PyObject *tuple = (first == NULL || second == NULL) ? NULL : PyTuple_New(2);
    if (tuple == NULL) {
        Py_XDECREF(first);
        Py_XDECREF(second);
        return NULL;
    }
    PyTuple_SET_ITEM(tuple, 0, first);
    PyTuple_SET_ITEM(tuple, 1, second);
    return tuple;
}

static PyObject *
pair(Py_ssize_t a, Py_ssize_t b)
{
    return tuple2(PyLong_FromSsize_t(a), PyLong_FromSsize_t(b));
}

/* args[1] and args[2] as C sizes; -1 with the error set when either is not one */
static int
read_bounds(PyObject *const *args, Py_ssize_t *start, Py_ssize_t *end)
{
    *start = PyLong_AsSsize_t(args[1]);
    if (*start == -1 && PyErr_Occurred())
        return -1;
    *end = PyLong_AsSsize_t(args[2]);
    if (*end == -1 && PyErr_Occurred())
        return -1;
    return 0;
}

/* locate(buf, begin) -> (start, end): see raw_head.locate_head_py */
static PyObject *
locate(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "locate(buf: bytes, begin: int)");
        return NULL;
    }
    const char *buf = PyBytes_AS_STRING(args[0]);
    Py_ssize_t size = PyBytes_GET_SIZE(args[0]);
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    if (start == -1 && PyErr_Occurred())
        return NULL;
    if (start < 0 || start > size)
        return pair(-1, -1);
    while (start < size && (buf[start] == '\r' || buf[start] == '\n'))
        start++;
    if (size - start < 5 || memcmp(buf + start, "HTTP/", 5) != 0)
        return pair(-1, -1);
    /* the first CR LF CR LF (memchr, not memmem: glibc's memmem sets up a two-way search
     * that costs more than this whole scan of a head of a few hundred bytes) */
    const char *at = buf + start, *last = buf + size - 4;
    while (at <= last) {
        at = memchr(at, '\r', (size_t)(last - at + 1));
        if (at == NULL)
            break;
        if (at[1] == '\n' && at[2] == '\r' && at[3] == '\n')
            return pair(start, (at - buf) + 4);
        at++;
    }
    return pair(-1, -1);
}

static long
kind_of(const char *name, Py_ssize_t size)
{
    char lower[MAX_NAME];
    if (size <= 0 || size >= MAX_NAME || !candidate[size << 5 | (name[0] & 31)])
        return KIND_KEEP;
    for (Py_ssize_t i = 0; i < size; i++) {
        char c = name[i];
        lower[i] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
    }
    for (int i = 0; i < name_count; i++) {
        if (names[i].size == size && memcmp(names[i].name, lower, (size_t)size) == 0)
            return names[i].kind;
    }
    return KIND_KEEP;
}

/* whether the name [name, name + size) equals `lower` (lowercase) but for the case of its
 * letters; `prefix`: whether it starts with it */
static int
equal_folded(const char *name, Py_ssize_t size, PyObject *lower, int prefix)
{
    Py_ssize_t n = PyBytes_GET_SIZE(lower);
    if (prefix ? n > size : n != size)
        return 0;
    const char *want = PyBytes_AS_STRING(lower);
    for (Py_ssize_t i = 0; i < n; i++) {
        char c = name[i];
        if (((c >= 'A' && c <= 'Z') ? (char)(c + 32) : c) != want[i])
            return 0;
    }
    return 1;
}

/* whether the route's rules remove the line named [name, name + size) of kind `kind`:
 * as response_head.edit_kinds decides, an exact name removes a field kept or a Date, a
 * prefix only a field kept (framing and hop-by-hop fields keep their kind); `prefixes`
 * may be NULL (none) */
static int
removed(const char *name, Py_ssize_t size, long kind, PyObject *drop, PyObject *prefixes)
{
    if (kind != KIND_KEEP && kind != KIND_DATE)
        return 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(drop); i++) {
        if (equal_folded(name, size, PyTuple_GET_ITEM(drop, i), 0))
            return 1;
    }
    if (kind != KIND_KEEP || prefixes == NULL)
        return 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(prefixes); i++) {
        if (equal_folded(name, size, PyTuple_GET_ITEM(prefixes, i), 1))
            return 1;
    }
    return 0;
}

/* a tuple of bytes objects (lowercase, which only the caller can promise: a name with a
 * capital letter would never match) */
static int
bytes_tuple(PyObject *names)
{
    if (!PyTuple_Check(names))
        return 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(names); i++) {
        if (!PyBytes_Check(PyTuple_GET_ITEM(names, i)))
            return 0;
    }
    return 1;
}

static int
is_plain(const char *value, Py_ssize_t size)
{
    for (int i = 0; i < plain_count; i++) {
        if (plain[i].size == size && memcmp(plain[i].value, value, (size_t)size) == 0)
            return 1;
    }
    return 0;
}

/* a run of kept lines, as a bytes object at the end of `parts`; -1 on error */
static int
append_piece(PyObject *parts, const char *run, Py_ssize_t size)
{
    PyObject *piece = PyBytes_FromStringAndSize(run, size);
    int failed = piece == NULL || PyList_Append(parts, piece) < 0;
    Py_XDECREF(piece);
    return failed ? -1 : 0;
}

/* scan(buf, start, end, status_line[, drop, prefixes]) -> (parts, has_date, chunked,
 * length) or None: see raw_head.scan_head_py */
static PyObject *
scan(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 4 || nargs > 6 || !PyBytes_Check(args[0]) || !PyBytes_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "scan(buf: bytes, start: int, end: int, status_line: bytes"
                                         "[, drop: tuple[bytes, ...], prefixes: tuple[bytes, ...]])");
        return NULL;
    }
    /* the route's removals: lowercase names and name prefixes (policies/fields.FieldEdit) */
    PyObject *drop = NULL, *prefixes = NULL;
    if (nargs > 4) {
        PyObject *names = args[4], *starts = nargs > 5 ? args[5] : NULL;
        if (!bytes_tuple(names) || (starts != NULL && !bytes_tuple(starts))) {
            PyErr_SetString(PyExc_TypeError, "drop and prefixes must be tuples of bytes");
            return NULL;
        }
        if (starts != NULL && PyTuple_GET_SIZE(starts) == 0)
            starts = NULL;
        if (PyTuple_GET_SIZE(names) || starts != NULL) {
            drop = names;
            prefixes = starts;
        }
    }
    if (!configured) {
        PyErr_SetString(PyExc_RuntimeError, "scan() before configure()");
        return NULL;
    }
    PyObject *bytes = args[0];
    const char *buf = PyBytes_AS_STRING(bytes);
    Py_ssize_t size = PyBytes_GET_SIZE(bytes);
    Py_ssize_t start, end;
    if (read_bounds(args, &start, &end) < 0)
        return NULL;
    /* (end >= 4 first: with start >= 0, end - start cannot overflow then) */
    if (start < 0 || end > size || end < 4 || end - start < 4)
        Py_RETURN_NONE;
    const char *stop = buf + end - 2; /* where the blank line begins */
    const char *pos = memchr(buf + start, '\n', (size_t)(stop - (buf + start)));
    if (pos == NULL)
        Py_RETURN_NONE;
    pos++; /* the first field line */
    const char *run = pos;
    int has_date = 0, chunked = 0;
    const char *length = NULL;
    Py_ssize_t length_size = 0;
    PyObject *parts = PyList_New(1);
    if (parts == NULL)
        return NULL;
    Py_INCREF(args[3]);
    PyList_SET_ITEM(parts, 0, args[3]);
    while (pos < stop) {
        const char *eol = memchr(pos, '\r', (size_t)(stop - pos));
        if (eol == NULL || eol[1] != '\n')
            goto refuse;
        const char *colon = memchr(pos, ':', (size_t)(eol - pos));
        /* "Name:value", "Name:" or more whitespace than one space: rewrite_head would
         * write the line differently */
        if (colon == NULL || colon + 1 >= eol || colon[1] != ' ')
            goto refuse;
        if (colon + 2 < eol && (colon[2] == ' ' || colon[2] == '\t'))
            goto refuse;
        long kind = kind_of(pos, colon - pos);
        if (drop != NULL && removed(pos, colon - pos, kind, drop, prefixes)) {
            if (run < pos && append_piece(parts, run, pos - run) < 0) {
                Py_DECREF(parts);
                return NULL;
            }
            run = eol + 2;
        }
        else if (kind == KIND_LENGTH) {
            length = colon + 2;
            length_size = eol - length;
        }
        else if (kind == KIND_DATE) {
            has_date = 1;
        }
        else if (kind != KIND_KEEP) {
            if (kind == KIND_CHUNKED)
                chunked = 1;
            else if (kind == KIND_CONNECTION && !is_plain(colon + 2, eol - colon - 2))
                goto refuse;
            /* a dropped line: the run before it is relayed, the next starts after it */
            if (run < pos && append_piece(parts, run, pos - run) < 0) {
                Py_DECREF(parts);
                return NULL;
            }
            run = eol + 2;
        }
        pos = eol + 2;
    }
    if (run < stop && append_piece(parts, run, stop - run) < 0) {
        Py_DECREF(parts);
        return NULL;
    }
    PyObject *value = PyBytes_FromStringAndSize(length ? length : "", length_size);
    PyObject *result = value == NULL ? NULL : PyTuple_New(4);
    if (result == NULL) {
        Py_XDECREF(value);
        Py_DECREF(parts);
        return NULL;
    }
    PyTuple_SET_ITEM(result, 0, parts);
    PyTuple_SET_ITEM(result, 1, Py_NewRef(has_date ? Py_True : Py_False));
    PyTuple_SET_ITEM(result, 2, Py_NewRef(chunked ? Py_True : Py_False));
    PyTuple_SET_ITEM(result, 3, value);
    return result;
refuse:
    Py_DECREF(parts);
    Py_RETURN_NONE;
}

/* The (name, value) pair of one field line [pos, eol): see raw_head.split_fields_py */
static PyObject *
field_pair(const char *pos, const char *eol)
{
    const char *colon = memchr(pos, ':', (size_t)(eol - pos));
    const char *value = eol;
    if (colon != NULL) {
        value = colon + 1;
        while (value < eol && (*value == ' ' || *value == '\t'))
            value++;
    }
    else {
        colon = eol;
    }
    return tuple2(PyBytes_FromStringAndSize(pos, colon - pos),
                  PyBytes_FromStringAndSize(value, eol - value));
}

/* split(buf, start, end) -> [(name, value), ...]: see raw_head.split_fields_py, whose
 * result this is for 0 <= start <= end - 4 <= len(buf) - 4; other bounds are a ValueError */
static PyObject *
split(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "split(buf: bytes, start: int, end: int)");
        return NULL;
    }
    const char *buf = PyBytes_AS_STRING(args[0]);
    Py_ssize_t size = PyBytes_GET_SIZE(args[0]);
    Py_ssize_t start, end;
    if (read_bounds(args, &start, &end) < 0)
        return NULL;
    /* (end >= 4 first: with start >= 0, end - 4 - start cannot overflow then) */
    if (start < 0 || end > size || end < 4 || end - 4 < start) {
        PyErr_SetString(PyExc_ValueError, "split: bounds outside the buffer");
        return NULL;
    }
    PyObject *fields = PyList_New(0);
    if (fields == NULL)
        return NULL;
    const char *pos = buf + start, *stop = buf + end - 4;
    int first = 1; /* the status line, which is not a field */
    for (;;) {
        /* the next CR LF at or after pos, else the end: the line is [pos, eol) */
        const char *eol = pos;
        for (;;) {
            eol = memchr(eol, '\r', (size_t)(stop - eol));
            if (eol == NULL || (eol + 1 < stop && eol[1] == '\n'))
                break;
            eol++;
        }
        const char *line_end = eol == NULL ? stop : eol;
        if (!first) {
            PyObject *pair_ = field_pair(pos, line_end);
            if (pair_ == NULL || PyList_Append(fields, pair_) < 0) {
                Py_XDECREF(pair_);
                Py_DECREF(fields);
                return NULL;
            }
            Py_DECREF(pair_);
        }
        first = 0;
        if (eol == NULL)
            break;
        pos = eol + 2; /* after a separator there is always one more line, maybe empty */
    }
    return fields;
}

static PyMethodDef methods[] = {
    {"configure", configure, METH_VARARGS,
     "configure(kinds, plain_connection, (keep, length, date, chunked, connection))"},
    {"locate", (PyCFunction)(void (*)(void))locate, METH_FASTCALL, "locate(buf, begin) -> (start, end)"},
    {"scan", (PyCFunction)(void (*)(void))scan, METH_FASTCALL,
     "scan(buf, start, end, status_line[, drop, prefixes]) -> (parts, has_date, chunked, length) | None"},
    {"split", (PyCFunction)(void (*)(void))split, METH_FASTCALL,
     "split(buf, start, end) -> [(name, value), ...]"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "bastion.proxy._rawhead", NULL, -1, methods,
};

PyMODINIT_FUNC
PyInit__rawhead(void)
{
    return PyModule_Create(&module);
}
