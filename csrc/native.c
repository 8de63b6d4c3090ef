/* dispatcher._native: the campaign checks' per-chunk loops in C (issue 13), and the
 * per-line steps of the send path's plain lines (issue 16).
 *
 * Each function here has a numpy (or plain Python) twin in dispatcher/ that gives the
 * same answer, bit for bit; dispatcher/native.py picks this module when it is built and
 * the twin otherwise, and the tests check the two against each other. Only the buffer
 * protocol is used (no numpy C API), so the module builds against any numpy and needs
 * none at build time.
 *
 * What is here, and why it is not numpy:
 *   text_hashes   XXH3-64 of each str's UTF-8: one C loop instead of a Python call,
 *                 an encode and a bytes object a text.
 *   number_keys   "+<digits>" -> the integer of the digits: one loop, no join, no
 *                 separator count, no parse of a whole text.
 *   column_ints, column_keys
 *                 the line numbers (and the numbers' keys) of a list of Entry tuples,
 *                 without a Python call an entry.
 *   take_at       a chunk's keys gathered by line (dispatcher.dedupe.ChunkNumbers).
 *   empty         room for the functions here to write into, not zeroed first.
 *   Record        the packed duplicate record (dispatcher.dedupe.NativeRecord; its twin
 *                 is dispatcher.dedupe_runs.Runs): sorted runs behind a split-block
 *                 Bloom filter (the mix and the probe fused, prefetched), a chunk's
 *                 keys sorted by radix (no comparisons to branch on), its few
 *                 questions answered through each run's index, and runs merged four at
 *                 a time without branches, a column at a time. One call a chunk.
 *   merge_keys    the merge of Record's runs as a function of its own: what the tests
 *                 hold to a stable sort (and to a run that ends where another begins).
 *   KeySet, plain_keys, sorted_distinct, valid_keys
 *                 an opt-out list: its set of keys (the same filter, and an index),
 *                 its blocks of numbers parsed in one pass over their text, its keys
 *                 sorted (by radix, or in place beyond 2^22) and its country check
 *                 (their twins are in dispatcher.sorted_keys).
 *   segment_counts
 *                 the encoding and segments of a chunk's texts from a table of the
 *                 GSM-7 characters, one pass a text (dispatcher.segments.count).
 *   accepted_lines
 *                 an accepted batch's result lines (dispatcher.writers).
 *   chunk_numbers, plain_texts, plain_entries
 *                 a chunk's numbers normalised, its plain lines found and rendered,
 *                 and their entries made (dispatcher.prepare.Preparer._columns),
 *                 reading each record's fields at their slots: no attrgetter, map or
 *                 zip a step, no regex, no f-string a line.
 *   decode_lines  the reader's loop over a chunk's lines: msgspec's decode of each,
 *                 its line number set at its slot, the careful parse where it fails.
 *   batch_recipients
 *                 a batch body's recipients written straight from the entries, with
 *                 no dict a recipient for orjson to walk (dispatcher.api.body).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h> /* T_OBJECT_EX: the slots of dispatcher.models.Recipient */
#include <math.h>
#include <stdint.h>
#include <string.h>

#define XXH_INLINE_ALL
#include "xxhash/xxhash.h"

/* A C-contiguous buffer of `itemsize`-byte items (numpy arrays, bytes, array.array). */
static int
get_buffer(PyObject *obj, Py_buffer *view, Py_ssize_t itemsize, int writable, const char *what)
{
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0) {
        return -1;
    }
    if (view->itemsize != itemsize) {
        PyErr_Format(PyExc_TypeError, "%s: items of %zd bytes, not %zd", what, itemsize,
                     view->itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

#define COUNT(view) ((view).len / (view).itemsize)

/* ---- text_hashes ------------------------------------------------------------------ */

/* The items of a sequence and a uint64 array of as many (out): 0, or -1 with an error. */
static int
items_and_out(PyObject *args, const char *format, PyObject **seq, Py_buffer *out)
{
    PyObject *items_obj, *out_obj;
    if (!PyArg_ParseTuple(args, format, &items_obj, &out_obj)) {
        return -1;
    }
    *seq = PySequence_Fast(items_obj, "a list of items");
    if (*seq == NULL) {
        return -1;
    }
    if (get_buffer(out_obj, out, 8, 1, "out") < 0) {
        Py_CLEAR(*seq);
        return -1;
    }
    if (COUNT(*out) != PySequence_Fast_GET_SIZE(*seq)) {
        PyErr_SetString(PyExc_ValueError, "out: one word an item");
        PyBuffer_Release(out);
        Py_CLEAR(*seq);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(text_hashes_doc,
"text_hashes(texts, out)\n\n"
"Write into out (uint64, one a text) the XXH3-64 (seed 0) of each str's UTF-8, lone\n"
"surrogates passed through: xxhash.xxh3_64_intdigest(text.encode('utf-8',\n"
"'surrogatepass')).");

#define SMALL_TEXT 1024

/* The UTF-8 of a str into out (room for 4 bytes a character), surrogates encoded as
 * any other code point (as Python's "surrogatepass"): its size. */
static size_t
utf8_encode(PyObject *text, unsigned char *out)
{
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    Py_ssize_t length = PyUnicode_GET_LENGTH(text);
    unsigned char *at = out;
    Py_ssize_t j = 0;
    if (kind == PyUnicode_1BYTE_KIND) {
        /* Latin-1 (a name with an accent in an ASCII text): eight characters at a time
         * while they are ASCII, copied as they are; the others two bytes each. */
        const unsigned char *c = data;
        while (j < length) {
            if (j + 8 <= length) {
                uint64_t eight, high;
                memcpy(&eight, c + j, 8);
                high = eight & 0x8080808080808080ULL;
                memcpy(at, &eight, 8); /* room: at most 2 bytes a character, j <= length - 8 */
                if (high == 0) {
                    at += 8, j += 8;
                    continue;
                }
#if defined(__GNUC__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
                /* the ASCII characters before the first other one are written already */
                int ascii = __builtin_ctzll(high) >> 3;
                at += ascii, j += ascii;
#endif
            }
            unsigned char ch = c[j++];
            if (ch < 0x80) {
                *at++ = ch;
            }
            else {
                *at++ = (unsigned char)(0xC0 | (ch >> 6));
                *at++ = (unsigned char)(0x80 | (ch & 0x3F));
            }
        }
        return (size_t)(at - out);
    }
    for (; j < length; j++) {
#if defined(__GNUC__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        /* UCS-2 and UCS-4: four (two) characters at a time while they are ASCII (each
         * character's low byte first in memory). */
        if (kind == PyUnicode_2BYTE_KIND && j + 4 <= length) {
            uint64_t four;
            memcpy(&four, (const Py_UCS2 *)data + j, 8);
            if ((four & 0xFF80FF80FF80FF80ULL) == 0) {
                four = (four | (four >> 8)) & 0x0000FFFF0000FFFFULL;
                four = (four | (four >> 16)) & 0xFFFFFFFFULL;
                uint32_t bytes = (uint32_t)four;
                memcpy(at, &bytes, 4);
                at += 4, j += 3;
                continue;
            }
        }
        else if (kind == PyUnicode_4BYTE_KIND && j + 2 <= length) {
            uint64_t two;
            memcpy(&two, (const Py_UCS4 *)data + j, 8);
            if ((two & 0xFFFFFF80FFFFFF80ULL) == 0) {
                at[0] = (unsigned char)two, at[1] = (unsigned char)(two >> 32);
                at += 2, j += 1;
                continue;
            }
        }
#endif
        Py_UCS4 cp = PyUnicode_READ(kind, data, j);
        if (cp < 0x80) {
            *at++ = (unsigned char)cp;
        }
        else if (cp < 0x800) {
            *at++ = (unsigned char)(0xC0 | (cp >> 6));
            *at++ = (unsigned char)(0x80 | (cp & 0x3F));
        }
        else if (cp < 0x10000) {
            *at++ = (unsigned char)(0xE0 | (cp >> 12));
            *at++ = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
            *at++ = (unsigned char)(0x80 | (cp & 0x3F));
        }
        else {
            *at++ = (unsigned char)(0xF0 | (cp >> 18));
            *at++ = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
            *at++ = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
            *at++ = (unsigned char)(0x80 | (cp & 0x3F));
        }
    }
    return (size_t)(at - out);
}

static PyObject *
text_hashes(PyObject *self, PyObject *args)
{
    PyObject *seq;
    Py_buffer out;
    if (items_and_out(args, "OO:text_hashes", &seq, &out) < 0) {
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    uint64_t *hashes = out.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *text = items[i];
        if (!PyUnicode_Check(text)) {
            PyErr_Format(PyExc_TypeError, "text_hashes: item %zd is %.100s, not str", i,
                         Py_TYPE(text)->tp_name);
            goto fail;
        }
        if (PyUnicode_IS_ASCII(text)) { /* its UTF-8 is its own data */
            hashes[i] = XXH3_64bits(PyUnicode_DATA(text), (size_t)PyUnicode_GET_LENGTH(text));
            continue;
        }
        /* A text of up to SMALL_TEXT characters is encoded here, on the stack (a
         * surrogate as three bytes, as "surrogatepass" does); a longer one into a bytes
         * object freed at once: PyUnicode_AsUTF8AndSize would keep a UTF-8 copy on every
         * str for as long as it lives. */
        if (PyUnicode_GET_LENGTH(text) <= SMALL_TEXT) {
            unsigned char utf8[4 * SMALL_TEXT];
            hashes[i] = XXH3_64bits(utf8, utf8_encode(text, utf8));
            continue;
        }
        PyObject *encoded = PyUnicode_AsEncodedString(text, "utf-8", "surrogatepass");
        if (encoded == NULL) {
            goto fail;
        }
        hashes[i] = XXH3_64bits(PyBytes_AS_STRING(encoded), (size_t)PyBytes_GET_SIZE(encoded));
        Py_DECREF(encoded);
    }
    Py_DECREF(seq);
    PyBuffer_Release(&out);
    Py_RETURN_NONE;
fail:
    Py_DECREF(seq);
    PyBuffer_Release(&out);
    return NULL;
}

/* ---- digits, eight at a time ------------------------------------------------------------- */

/* Whether the eight bytes of v (as read from memory, little-endian) are ASCII digits. */
static inline int
eight_are_digits(uint64_t v)
{
    return (v & 0xF0F0F0F0F0F0F0F0ULL) == 0x3030303030303030ULL &&
           ((v + 0x0606060606060606ULL) & 0xF0F0F0F0F0F0F0F0ULL) == 0x3030303030303030ULL;
}

/* The value of eight ASCII digits read from memory (the first in the low byte): three
 * multiplications instead of eight (Lemire's parse_eight_digits_unrolled). */
static inline uint64_t
eight_digits_value(uint64_t v)
{
    v -= 0x3030303030303030ULL;
    v = v * 10 + (v >> 8);
    return (((v & 0x000000FF000000FFULL) * (100 + (1000000ULL << 32))) +
            (((v >> 16) & 0x000000FF000000FFULL) * (1 + (10000ULL << 32)))) >>
           32;
}

/* The value of `count` ASCII digits at p (1 to 19), or -1 when one is not a digit: the
 * first count % 8 one by one, then eight at a time. */
static inline int
digits_value(const unsigned char *p, Py_ssize_t count, uint64_t *value)
{
    uint64_t v = 0;
    Py_ssize_t head = count % 8;
    for (Py_ssize_t j = 0; j < head; j++) {
        unsigned digit = (unsigned)p[j] - '0';
        if (digit > 9) {
            return -1;
        }
        v = v * 10 + digit;
    }
    for (Py_ssize_t j = head; j < count; j += 8) {
        uint64_t eight;
        memcpy(&eight, p + j, 8);
        if (!eight_are_digits(eight)) {
            return -1;
        }
        v = v * 100000000ULL + eight_digits_value(eight);
    }
    *value = v;
    return 0;
}

/* ---- number_keys ------------------------------------------------------------------ */

/* number_keys of one item: None as 0, "+" and 1 to 18 digits as their integer; 0 (key
 * not written) for anything else. */
static int
number_key_of(PyObject *number, uint64_t *key)
{
    if (number == Py_None) {
        *key = 0;
        return 1;
    }
    if (!PyUnicode_Check(number) || !PyUnicode_IS_ASCII(number)) {
        return 0;
    }
    const unsigned char *s = PyUnicode_DATA(number);
    Py_ssize_t len = PyUnicode_GET_LENGTH(number);
    if (len < 2 || len > 19 || s[0] != '+') {
        return 0;
    }
    return digits_value(s + 1, len - 1, key) == 0;
}

PyDoc_STRVAR(number_keys_doc,
"number_keys(numbers, out) -> bool\n\n"
"Write into out (uint64, one a number) each normalised number ('+' and 1 to 18 digits)\n"
"as the integer of its digits, None as 0. False (out half written: the caller's\n"
"careful path) when an item is anything else.");

static PyObject *
number_keys(PyObject *self, PyObject *args)
{
    PyObject *seq;
    Py_buffer out;
    if (items_and_out(args, "OO:number_keys", &seq, &out) < 0) {
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    uint64_t *keys = out.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!number_key_of(items[i], &keys[i])) {
            goto careful;
        }
    }
    Py_DECREF(seq);
    PyBuffer_Release(&out);
    Py_RETURN_TRUE;
careful:
    Py_DECREF(seq);
    PyBuffer_Release(&out);
    Py_RETURN_FALSE;
}

/* ---- column_ints ------------------------------------------------------------------ */

/* One column item read into a word: 1, or 0 when it is not what the column holds. */
typedef int (*ReadItem)(PyObject *item, int64_t *value);

static int
read_int(PyObject *item, int64_t *value)
{
    if (!PyLong_Check(item)) {
        return 0;
    }
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(item, &overflow);
    *value = v;
    return !overflow;
}

static int
read_key(PyObject *item, int64_t *value)
{
    return number_key_of(item, (uint64_t *)value);
}

/* column_ints and column_keys: item `column` of each row (a tuple) read into out. */
static PyObject *
column_of(PyObject *args, const char *format, const char *name, ReadItem read)
{
    PyObject *rows_obj, *out_obj;
    Py_ssize_t column;
    if (!PyArg_ParseTuple(args, format, &rows_obj, &column, &out_obj)) {
        return NULL;
    }
    if (column < 0) {
        PyErr_Format(PyExc_ValueError, "%s: a column of 0 or more", name);
        return NULL;
    }
    PyObject *seq = PySequence_Fast(rows_obj, "a sequence of tuples");
    if (seq == NULL) {
        return NULL;
    }
    Py_buffer out;
    if (get_buffer(out_obj, &out, 8, 1, name) < 0) {
        Py_DECREF(seq);
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject *result = Py_True;
    if (COUNT(out) != n) {
        PyErr_Format(PyExc_ValueError, "%s: out, one word a row", name);
        result = NULL;
        goto done;
    }
    PyObject **rows = PySequence_Fast_ITEMS(seq);
    int64_t *values = out.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *row = rows[i];
        if (!PyTuple_Check(row) || PyTuple_GET_SIZE(row) <= column ||
            !read(PyTuple_GET_ITEM(row, column), &values[i])) {
            result = Py_False;
            break;
        }
    }
done:
    PyBuffer_Release(&out);
    Py_DECREF(seq);
    return Py_XNewRef(result);
}

PyDoc_STRVAR(column_ints_doc,
"column_ints(rows, column, out) -> bool\n\n"
"Write into out (int64, one a row) item column of each row (a tuple: an Entry), an int.\n"
"False (out half written: the caller's careful path) when a row is not a tuple that\n"
"long or its item is not an int of 64 bits.");

static PyObject *
column_ints(PyObject *self, PyObject *args)
{
    return column_of(args, "OnO:column_ints", "column_ints", read_int);
}

PyDoc_STRVAR(column_keys_doc,
"column_keys(rows, column, out) -> bool\n\n"
"Write into out (uint64, one a row) the key of item column of each row (a tuple: an\n"
"Entry's normalised number), as number_keys parses it. False (out half written: the\n"
"caller's careful path) when a row is not a tuple that long or its item is not a\n"
"number number_keys reads.");

static PyObject *
column_keys(PyObject *self, PyObject *args)
{
    return column_of(args, "OnO:column_keys", "column_keys", read_key);
}

/* ---- the filter --------------------------------------------------------------------- */

/* dispatcher.suppress.KeyFilter.spots, one pair: the word and its 4 bits. */
static inline uint64_t
mix(uint64_t key, uint64_t hash)
{
    uint64_t mixed = key * UINT64_C(0x9E3779B97F4A7C15);
    mixed ^= hash;
    mixed ^= mixed >> 32;
    mixed *= UINT64_C(0xBF58476D1CE4E5B9);
    mixed ^= mixed >> 29;
    return mixed;
}

static inline uint64_t
mix_bits(uint64_t mixed)
{
    return (UINT64_C(1) << (mixed & 63)) | (UINT64_C(1) << ((mixed >> 6) & 63)) |
           (UINT64_C(1) << ((mixed >> 12) & 63)) | (UINT64_C(1) << ((mixed >> 18) & 63));
}

static inline uint64_t
mix_word(uint64_t mixed, uint64_t size)
{
    return ((mixed >> 32) * size) >> 32;
}

/* How far ahead the probe prefetches its words: their cache misses overlap. */
#define AHEAD 8
#if defined(__GNUC__) || defined(__clang__)
#define PREFETCH(address, write) __builtin_prefetch((address), (write))
#else
#define PREFETCH(address, write) ((void)0)
#endif

/* The pairs' mixes AHEAD items ahead of the one read, their words prefetched: each pair
 * is mixed once (a ring of the next AHEAD mixes), and the cache misses overlap. */
typedef struct {
    uint64_t ring[AHEAD];
    const uint64_t *table, *key, *hash;
    uint64_t size;
    Py_ssize_t count;
    int write;
} Ahead;

static inline uint64_t
ahead_mix(const Ahead *a, Py_ssize_t j)
{
    uint64_t mixed = mix(a->key[j], a->hash != NULL ? a->hash[j] : 0);
    if (a->write) {
        PREFETCH(&a->table[mix_word(mixed, a->size)], 1);
    }
    else {
        PREFETCH(&a->table[mix_word(mixed, a->size)], 0);
    }
    return mixed;
}

static inline void
ahead_start(Ahead *a, const uint64_t *table, uint64_t size, const uint64_t *key,
            const uint64_t *hash, Py_ssize_t count, int write)
{
    a->table = table, a->size = size, a->key = key, a->hash = hash;
    a->count = count, a->write = write;
    for (Py_ssize_t j = 0; j < AHEAD && j < count; j++) {
        a->ring[j] = ahead_mix(a, j);
    }
}

/* Item j's mix (j counts up from 0 by one), and item j + AHEAD's mixed in its place. */
static inline uint64_t
ahead_next(Ahead *a, Py_ssize_t j)
{
    uint64_t mixed = a->ring[(size_t)j % AHEAD];
    if (j + AHEAD < a->count) {
        a->ring[(size_t)j % AHEAD] = ahead_mix(a, j + AHEAD);
    }
    return mixed;
}

/* Probe the filter for n pairs (hash NULL: keys alone): writes the positions
 * of the pairs whose bits were all set when probed; with add, sets each pair's bits
 * after its probe. Returns how many positions. */
#if defined(__GNUC__)
__attribute__((always_inline))
#endif
static inline Py_ssize_t
probe_pairs(uint64_t *table, uint64_t size, const uint64_t *key, const uint64_t *hash,
            Py_ssize_t n, int64_t *positions, int add)
{
    Py_ssize_t found = 0;
    Ahead ahead;
    ahead_start(&ahead, table, size, key, hash, n, add);
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t mixed = ahead_next(&ahead, i);
        uint64_t bits = mix_bits(mixed), *word = &table[mix_word(mixed, size)];
        if (add) {
            positions[found] = i;
            found += (*word & bits) == bits;
            *word |= bits;
        }
        else if ((*word & bits) == bits) {
            positions[found++] = i;
        }
    }
    return found;
}

/* Add n pairs to the filter (hash NULL: keys alone). */
static void
add_pairs(uint64_t *table, uint64_t size, const uint64_t *key, const uint64_t *hash,
          Py_ssize_t n)
{
    Ahead ahead;
    ahead_start(&ahead, table, size, key, hash, n, 1);
    for (Py_ssize_t j = 0; j < n; j++) {
        uint64_t mixed = ahead_next(&ahead, j);
        table[mix_word(mixed, size)] |= mix_bits(mixed);
    }
}

/* ---- the merge of sorted runs ----------------------------------------------------- */

#define MAX_RUNS 64

/* Release the first `count` views. */
static void
release_all(Py_buffer *views, Py_ssize_t count)
{
    for (Py_ssize_t i = 0; i < count; i++) {
        PyBuffer_Release(&views[i]);
    }
}

/* The buffers of a list of `itemsize`-byte columns, one per run. */
static Py_ssize_t
get_columns(PyObject *list, Py_buffer *views, Py_ssize_t itemsize, const char *what)
{
    if (!PyList_Check(list) || PyList_GET_SIZE(list) < 1 || PyList_GET_SIZE(list) > MAX_RUNS) {
        PyErr_Format(PyExc_ValueError, "%s: a list of 1 to %d columns", what, MAX_RUNS);
        return -1;
    }
    Py_ssize_t runs = PyList_GET_SIZE(list);
    for (Py_ssize_t r = 0; r < runs; r++) {
        if (get_buffer(PyList_GET_ITEM(list, r), &views[r], itemsize, 0, what) < 0) {
            release_all(views, r);
            return -1;
        }
    }
    return runs;
}

/* A key no run holds (the padding of dispatcher.suppress.SortedKeys): a used-up run's
 * head, which never wins while another run has an entry. */
static const uint64_t NO_KEY = UINT64_MAX;

/* merge_keys for four non-empty runs, as a tournament without branches: the two pairs'
 * winners, then the winner of those; a tie goes to the earlier run at each step, so
 * the merge is stable. A used-up run points at NO_KEY from then on (it never wins: the
 * caller checked no run holds NO_KEY). The steps go in blocks that no run can run out
 * in (as many as the fewest entries a run has left), so a step checks no end. Returns
 * the count. */
static Py_ssize_t
merge4(const uint64_t **at, const uint64_t **end, const int *order, uint64_t *dst,
       uint8_t *from)
{
    const uint64_t *p[4];
    Py_ssize_t left[4], total = 0, k = 0;
    for (int r = 0; r < 4; r++) {
        p[r] = at[order[r]];
        left[r] = end[order[r]] - p[r];
        total += left[r];
    }
    uint8_t source[4] = {(uint8_t)order[0], (uint8_t)order[1], (uint8_t)order[2],
                         (uint8_t)order[3]};
    while (k < total) {
        Py_ssize_t block = total - k;
        for (int r = 0; r < 4; r++) {
            if (left[r] == 0) {
                p[r] = &NO_KEY;
            }
            else if (left[r] < block) {
                block = left[r];
            }
        }
        const uint64_t *p0 = p[0], *p1 = p[1], *p2 = p[2], *p3 = p[3];
        for (Py_ssize_t step = 0; step < block; step++, k++) {
            uint64_t k0 = *p0, k1 = *p1, k2 = *p2, k3 = *p3;
            uintptr_t right01 = k1 < k0, right23 = k3 < k2;
            uint64_t low01 = right01 ? k1 : k0, low23 = right23 ? k3 : k2;
            uintptr_t right = low23 < low01;
#if defined(__GNUC__)
            /* Hide where these come from: else gcc turns the steps below back into
             * branches on the comparisons, whose outcome is the data's (measured: 9
             * against 5 ns an entry). */
            __asm__("" : "+r"(right01), "+r"(right23), "+r"(right));
#endif
            uintptr_t low_bit = right01 ^ ((right01 ^ right23) & (0 - right));
            uintptr_t best = (right << 1) | low_bit;
            dst[k] = right ? low23 : low01;
            from[k] = source[best];
            /* Each run steps on by 8 bytes when it won: a multiply by a 0-or-1 flag. */
            p0 = (const uint64_t *)((const char *)p0 + 8 * ((right | low_bit) ^ 1));
            p1 = (const uint64_t *)((const char *)p1 + 8 * ((right ^ 1) & low_bit));
            p2 = (const uint64_t *)((const char *)p2 + 8 * (right & (low_bit ^ 1)));
            p3 = (const uint64_t *)((const char *)p3 + 8 * (right & low_bit));
        }
        const uint64_t *now[4] = {p0, p1, p2, p3};
        for (int r = 0; r < 4; r++) { /* a used-up run has not moved from NO_KEY */
            left[r] -= now[r] - p[r];
            p[r] = now[r];
        }
    }
    return total;
}

/* Merge the sorted runs at[r]..end[r] (count of them, at most MAX_RUNS) into dst,
 * stably, writing into from the run each entry came from; at is moved on. Returns the
 * count merged. */
static Py_ssize_t
merge_runs(const uint64_t **at, const uint64_t **end, Py_ssize_t count, uint64_t *dst,
           uint8_t *from)
{
    /* The runs not yet used up, in run order (for stability). */
    int order[MAX_RUNS];
    Py_ssize_t live = 0;
    for (int r = 0; r < count; r++) {
        if (at[r] < end[r]) {
            order[live++] = r;
        }
    }
    Py_ssize_t k = 0;
    int has_no_key = 0; /* a run's last key is NO_KEY: merge4 would take it for used up */
    for (Py_ssize_t j = 0; j < live; j++) {
        has_no_key |= end[order[j]][-1] == NO_KEY;
    }
    if (live == 4 && !has_no_key) { /* the record's merges: FANOUT runs at a time */
        k = merge4(at, end, order, dst, from);
        live = 0;
    }
    while (live > 1) {
        int best = order[0];
        uint64_t low = *at[best];
        /* Any count of runs but four (merge4 is the record's case). Strictly less: of
         * equal keys, the earlier run's goes first. */
        for (Py_ssize_t j = 1; j < live; j++) {
            int r = order[j];
            uint64_t key = *at[r];
            int less = key < low;
            low = less ? key : low;
            best = less ? r : best;
        }
        dst[k] = low;
        from[k++] = (uint8_t)best;
        if (++at[best] == end[best]) {
            Py_ssize_t j = 0;
            while (order[j] != best) j++;
            memmove(&order[j], &order[j + 1], (size_t)(live - j - 1) * sizeof(int));
            live--;
        }
    }
    if (live == 1) {
        int r = order[0];
        Py_ssize_t rest = end[r] - at[r];
        memcpy(&dst[k], at[r], (size_t)rest * sizeof(uint64_t));
        memset(&from[k], r, (size_t)rest);
        k += rest;
    }
    return k;
}

PyDoc_STRVAR(merge_keys_doc,
"merge_keys(runs, out, source)\n\n"
"Merge the sorted uint64 columns of runs (a list, at most 64) into out, stably (of\n"
"equal keys, the earlier run's first), and write into source (uint8) the run each\n"
"entry came from: Record's merge, for the tests.");

static PyObject *
merge_keys(PyObject *self, PyObject *args)
{
    PyObject *runs_obj, *out_obj, *source_obj;
    if (!PyArg_ParseTuple(args, "O!OO:merge_keys", &PyList_Type, &runs_obj, &out_obj,
                          &source_obj)) {
        return NULL;
    }
    Py_buffer runs[MAX_RUNS], out = {0}, source = {0};
    Py_ssize_t count = get_columns(runs_obj, runs, 8, "merge_keys runs");
    if (count < 0) {
        return NULL;
    }
    PyObject *result = NULL;
    if (get_buffer(out_obj, &out, 8, 1, "merge_keys out") < 0 ||
        get_buffer(source_obj, &source, 1, 1, "merge_keys source") < 0) {
        goto done;
    }
    const uint64_t *at[MAX_RUNS], *end[MAX_RUNS];
    Py_ssize_t total = 0;
    for (Py_ssize_t r = 0; r < count; r++) {
        at[r] = runs[r].buf;
        end[r] = at[r] + COUNT(runs[r]);
        total += COUNT(runs[r]);
    }
    if (COUNT(out) < total || COUNT(source) < total) {
        PyErr_SetString(PyExc_ValueError, "merge_keys: out and source too short");
        goto done;
    }
    merge_runs(at, end, count, out.buf, source.buf);
    result = Py_NewRef(Py_None);
done:
    release_all(runs, count);
    if (out.obj) PyBuffer_Release(&out);
    if (source.obj) PyBuffer_Release(&source);
    return result;
}

/* Entry k of out is the next unread item of column from[k] (at[r]: where column r's
 * next item is; items of 4 or 8 bytes). */
static void
gather_columns(const char **at, const uint8_t *from, Py_ssize_t n, void *out, Py_ssize_t itemsize)
{
    if (itemsize == 8) {
        uint64_t *dst = out;
        for (Py_ssize_t k = 0; k < n; k++) {
            const uint64_t *p = (const uint64_t *)at[from[k]];
            dst[k] = *p;
            at[from[k]] = (const char *)(p + 1);
        }
    }
    else {
        uint32_t *dst = out;
        for (Py_ssize_t k = 0; k < n; k++) {
            const uint32_t *p = (const uint32_t *)at[from[k]];
            dst[k] = *p;
            at[from[k]] = (const char *)(p + 1);
        }
    }
}

/* ---- the sort of a chunk's keys -------------------------------------------------------- */

#define DIGIT_BITS 11
#define DIGITS 6 /* 6 * 11 >= 64 */
#define BUCKETS (1 << DIGIT_BITS)

/* The stable ascending order of n keys into out_order, and the keys in it into
 * out_keys: 0, or -1 with MemoryError set. */
static int
radix_argsort(const uint64_t *key, Py_ssize_t n, int64_t *out_order, uint64_t *out_keys)
{
    int status = -1;
    uint32_t *counts = PyMem_Calloc(DIGITS * BUCKETS, sizeof(uint32_t));
    uint64_t *spare_keys = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(uint64_t));
    int64_t *spare_order = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(int64_t));
    if (counts == NULL || spare_keys == NULL || spare_order == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t k = key[i];
        for (int d = 0; d < DIGITS; d++) {
            counts[d * BUCKETS + ((k >> (d * DIGIT_BITS)) & (BUCKETS - 1))]++;
        }
    }
    /* The passes that move anything; they alternate between the caller's buffers and
     * the spare ones, so that the last one writes into the caller's. */
    int passes[DIGITS], moving = 0;
    for (int d = 0; d < DIGITS; d++) {
        uint32_t *c = &counts[d * BUCKETS];
        int constant = 0;
        uint32_t sum = 0;
        for (int b = 0; b < BUCKETS; b++) {
            constant |= c[b] == (uint32_t)n;
            uint32_t here = c[b];
            c[b] = sum; /* from a count to where the digit's keys start */
            sum += here;
        }
        if (!constant) {
            passes[moving++] = d;
        }
    }
    /* The first pass reads the input and writes where the last pass must not write. */
    uint64_t *src_k = NULL, *dst_k;
    int64_t *src_o = NULL, *dst_o;
    if (moving % 2) {
        dst_k = out_keys;
        dst_o = out_order;
    }
    else {
        dst_k = spare_keys;
        dst_o = spare_order;
    }
    if (moving == 0) {
        for (Py_ssize_t i = 0; i < n; i++) {
            out_keys[i] = key[i];
            out_order[i] = i;
        }
    }
    for (int pass = 0; pass < moving; pass++) {
        int shift = passes[pass] * DIGIT_BITS;
        uint32_t *start = &counts[passes[pass] * BUCKETS];
        if (pass == 0) {
            for (Py_ssize_t i = 0; i < n; i++) {
                uint64_t k = key[i];
                uint32_t at = start[(k >> shift) & (BUCKETS - 1)]++;
                dst_k[at] = k;
                dst_o[at] = i;
            }
        }
        else {
            for (Py_ssize_t i = 0; i < n; i++) {
                uint64_t k = src_k[i];
                uint32_t at = start[(k >> shift) & (BUCKETS - 1)]++;
                dst_k[at] = k;
                dst_o[at] = src_o[i];
            }
        }
        src_k = dst_k;
        src_o = dst_o;
        dst_k = src_k == out_keys ? spare_keys : out_keys;
        dst_o = src_o == out_order ? spare_order : out_order;
    }
    status = 0;
done:
    PyMem_Free(counts);
    PyMem_Free(spare_keys);
    PyMem_Free(spare_order);
    return status;
}

/* ---- the look-up of a chunk's keys in a run ------------------------------------------- */

/* dispatcher.suppress.SortedKeys.STEP: the index holds every BLOCK-th key. */
#define BLOCK 64

/* The position of the first of the sorted keys >= q (size when none): its block of
 * BLOCK keys is found in every (every BLOCK-th key, blocks of them), then q in it. */
static inline Py_ssize_t
first_at_least(const uint64_t *sorted, Py_ssize_t size, const uint64_t *every,
               Py_ssize_t blocks, uint64_t q)
{
    /* The first sampled key >= q is every[b] = sorted[b * BLOCK]; the sample before
     * it is < q. So the first key >= q is in ((b - 1) * BLOCK, b * BLOCK]. */
    Py_ssize_t lo = 0, hi = blocks;
    while (lo < hi) {
        Py_ssize_t mid = lo + (hi - lo) / 2;
        if (every[mid] < q) {
            lo = mid + 1;
        }
        else {
            hi = mid;
        }
    }
    Py_ssize_t b = lo;
    lo = b ? (b - 1) * BLOCK + 1 : 0;
    hi = b * BLOCK < size ? b * BLOCK : size;
    while (lo < hi) {
        Py_ssize_t mid = lo + (hi - lo) / 2;
        if (sorted[mid] < q) {
            lo = mid + 1;
        }
        else {
            hi = mid;
        }
    }
    return lo;
}

/* ---- an opt-out list's load -------------------------------------------------------------- */

/* Sort n keys in place, ascending: 0, or -1 with MemoryError set (the
 * keys untouched). */
static int
radix_sort(uint64_t *keys, Py_ssize_t n)
{
    int status = -1;
    uint32_t *counts = NULL;
    uint64_t *spare = NULL;
    counts = PyMem_Calloc(DIGITS * BUCKETS, sizeof(uint32_t));
    spare = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(uint64_t));
    if (counts == NULL || spare == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    uint64_t *src = keys, *dst = spare;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t k = src[i];
        for (int d = 0; d < DIGITS; d++) {
            counts[d * BUCKETS + ((k >> (d * DIGIT_BITS)) & (BUCKETS - 1))]++;
        }
    }
    for (int d = 0; d < DIGITS; d++) {
        uint32_t *start = &counts[d * BUCKETS];
        int constant = 0;
        uint32_t sum = 0;
        for (int b = 0; b < BUCKETS; b++) {
            constant |= start[b] == (uint32_t)n;
            uint32_t here = start[b];
            start[b] = sum;
            sum += here;
        }
        if (constant) {
            continue;
        }
        int shift = d * DIGIT_BITS;
        for (Py_ssize_t i = 0; i < n; i++) {
            uint64_t k = src[i];
            dst[start[(k >> shift) & (BUCKETS - 1)]++] = k;
        }
        uint64_t *swap = src;
        src = dst;
        dst = swap;
    }
    if (src != keys) {
        memcpy(keys, src, (size_t)n * sizeof(uint64_t));
    }
    status = 0;
done:
    PyMem_Free(counts);
    PyMem_Free(spare);
    return status;
}

/* Whether byte c is one of the separators (ASCII) a number may be written with. */
static inline int
is_separator(const unsigned char *separators, Py_ssize_t count, unsigned char c)
{
    return memchr(separators, c, (size_t)count) != NULL;
}

/* 10^i, for i up to 19. */
static const uint64_t POWER10[20] = {
    1ULL, 10ULL, 100ULL, 1000ULL, 10000ULL, 100000ULL, 1000000ULL, 10000000ULL,
    100000000ULL, 1000000000ULL, 10000000000ULL, 100000000000ULL,
    1000000000000ULL, 10000000000000ULL, 100000000000000ULL,
    1000000000000000ULL, 10000000000000000ULL, 100000000000000000ULL,
    1000000000000000000ULL, 10000000000000000000ULL};

PyDoc_STRVAR(plain_keys_doc,
"plain_keys(text, separators, table, min_digits, max_digits, keys, valid) -> int | None\n\n"
"dispatcher.suppress._plain_keys in one pass: when every line of text (ASCII, no empty\n"
"line, not ending in a newline) is a number -- the bytes of separators removed, an\n"
"optional leading +, then min_digits to max_digits digits, the first not 0 -- write\n"
"each line's number into keys (uint64) and into valid (bool) table[digit count * 1000\n"
"+ first three digits], and return the count of lines. Else None: the caller's careful\n"
"path decides line by line.");

static PyObject *
plain_keys(PyObject *self, PyObject *args)
{
    PyObject *text, *keys_obj, *valid_obj;
    Py_buffer separators = {0}, table = {0}, keys = {0}, valid = {0};
    int min_digits, max_digits;
    if (!PyArg_ParseTuple(args, "Uy*y*iiOO:plain_keys", &text, &separators, &table,
                          &min_digits, &max_digits, &keys_obj, &valid_obj)) {
        return NULL;
    }
    PyObject *result = NULL;
    if (get_buffer(keys_obj, &keys, 8, 1, "plain_keys keys") < 0 ||
        get_buffer(valid_obj, &valid, 1, 1, "plain_keys valid") < 0) {
        goto done;
    }
    if (min_digits < 3 || max_digits > 19 || min_digits > max_digits ||
        table.len < (Py_ssize_t)(max_digits + 1) * 1000 || COUNT(valid) < COUNT(keys)) {
        PyErr_SetString(PyExc_ValueError, "plain_keys: a table of (max_digits + 1) * 1000");
        goto done;
    }
    if (!PyUnicode_IS_ASCII(text)) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    const unsigned char *at = PyUnicode_DATA(text), *end = at + PyUnicode_GET_LENGTH(text);
    const unsigned char *seps = separators.buf, *country = table.buf;
    uint64_t *key = keys.buf;
    uint8_t *ok = valid.buf;
    Py_ssize_t room = COUNT(keys), count = 0;
    if (at == end || end[-1] == '\n') {
        result = Py_NewRef(Py_None);
        goto done;
    }
    while (at < end) { /* one line */
        if (count == room) {
            goto careful;
        }
        const unsigned char *line_end = memchr(at, '\n', (size_t)(end - at));
        if (line_end == NULL) {
            line_end = end;
        }
        int digits = 0, plus = 0, prefix = 0;
        uint64_t value = 0;
        /* The usual line, '+' and digits or digits alone: read eight digits at a time. */
        const unsigned char *first = at + (at < line_end && *at == '+');
        Py_ssize_t length = line_end - first;
        if (length >= min_digits && length <= max_digits && *first != '0' &&
            digits_value(first, length, &value) == 0) {
            key[count] = value;
            ok[count] = country[length * 1000 + (Py_ssize_t)(value / POWER10[length - 3])] != 0;
            count++;
            at = line_end + 1;
            continue;
        }
        value = 0;
        for (; at < line_end; at++) {
            unsigned c = *at;
            if (c - '0' <= 9) {
                if (digits == 0 && c == '0') {
                    goto careful;
                }
                if (++digits > max_digits) {
                    goto careful;
                }
                value = value * 10 + (c - '0');
                if (digits <= 3) {
                    prefix = prefix * 10 + (int)(c - '0');
                }
            }
            else if (c == '+' && digits == 0 && !plus) {
                plus = 1;
            }
            else if (!is_separator(seps, separators.len, (unsigned char)c) || c == '+') {
                goto careful;
            }
        }
        if (digits < min_digits) {
            goto careful;
        }
        key[count] = value;
        ok[count] = country[digits * 1000 + prefix] != 0;
        count++;
        at = line_end + 1;
    }
    result = PyLong_FromSsize_t(count);
    goto done;
careful:
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&separators);
    PyBuffer_Release(&table);
    if (keys.obj) PyBuffer_Release(&keys);
    if (valid.obj) PyBuffer_Release(&valid);
    return result;
}

/* ---- the result lines of an accepted batch ---------------------------------------------- */

/* A growing byte buffer. */
typedef struct {
    char *data;
    size_t size, room;
} Buffer;

/* Room for `count` bytes at least: one allocation where the size is foreseen. */
static int
buffer_reserve(Buffer *b, size_t count)
{
    if (count <= b->room) {
        return 0;
    }
    /* at least double a buffer already made, so that reserving as it fills stays cheap */
    count = count > b->room * 2 ? count : b->room * 2;
    char *data = PyMem_Realloc(b->data, count);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = data;
    b->room = count;
    return 0;
}

static int
buffer_put(Buffer *b, const char *bytes, size_t count)
{
    if (b->size + count > b->room) {
        size_t room = b->room * 2 > b->size + count ? b->room * 2 : b->size + count + 4096;
        char *data = PyMem_Realloc(b->data, room);
        if (data == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        b->data = data;
        b->room = room;
    }
    memcpy(b->data + b->size, bytes, count);
    b->size += count;
    return 0;
}

#define PUT_LITERAL(b, text) buffer_put((b), (text), sizeof(text) - 1)

/* Whether an ASCII str is JSON text as it is (writers._VERBATIM: printable, no quote,
 * no backslash): 1, 0, or 0 for a str that is not ASCII. */
static int
verbatim(PyObject *text)
{
    if (!PyUnicode_Check(text) || !PyUnicode_IS_ASCII(text)) {
        return 0;
    }
    const unsigned char *c = PyUnicode_DATA(text);
    Py_ssize_t size = PyUnicode_GET_LENGTH(text);
    int ok = 1;
    for (Py_ssize_t i = 0; i < size; i++) {
        ok &= (c[i] >= 0x20) & (c[i] <= 0x7E) & (c[i] != '"') & (c[i] != '\\');
    }
    return ok;
}

/* The UTF-8 of a str (kept by the str: only for the batch's few constant strings), or of
 * an ASCII str its data. */
static const char *
utf8_of(PyObject *text, Py_ssize_t *size)
{
    if (!PyUnicode_Check(text)) {
        PyErr_SetString(PyExc_TypeError, "accepted_lines: a str expected");
        return NULL;
    }
    return PyUnicode_AsUTF8AndSize(text, size);
}

/* The decimal digits of an integer, with its sign, written backwards from `end` (room
 * for 21 before it): where they start (no snprintf: ~4 times the work). */
static char *
digits_before(char *end, unsigned long long magnitude, int negative)
{
    char *at = end;
    do {
        *--at = (char)('0' + magnitude % 10);
        magnitude /= 10;
    } while (magnitude);
    if (negative) {
        *--at = '-';
    }
    return at;
}

static int
buffer_put_digits(Buffer *b, unsigned long long magnitude, int negative)
{
    char digits[24];
    char *end = digits + sizeof(digits), *at = digits_before(end, magnitude, negative);
    return buffer_put(b, at, (size_t)(end - at));
}

static int
buffer_put_int(Buffer *b, long long value)
{
    return buffer_put_digits(b, value < 0 ? 0ULL - (unsigned long long)value : (unsigned long long)value,
                             value < 0);
}

/* The powers of ten a double holds exactly (10^22 is the last): m / 10^k of two of them
 * rounds once. `float_text` writes with them and `record_number` reads with them. */
static const double POW10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                               1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                               1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
#define POWERS ((int)(sizeof(POW10) / sizeof(POW10[0])))

/* Room for any text `float_text` writes: a sign, "0.", 18 zeros and 15 digits. */
#define FLOAT_TEXT 40

/* A finite float as orjson writes it, where that is quick to find: `value` is m / 10^k
 * with m < 10^15 the integer for the fewest k that reads back as `value` (a division of
 * two doubles held exactly, so rounded once, as a parse rounds), written as orjson
 * writes such a number: the digits with the point k from the end, ".0" for k = 0, "0.0…"
 * below 1. For 1e-4 <= |value| < 1e15 and 0; elsewhere (an exponent in orjson's text,
 * more than 15 digits) 0 is returned and orjson writes it.
 *
 * It is the shortest text that reads back, as orjson's (Ryu) is: a shorter one would
 * have a smaller k, and every smaller k was tried (m is found exactly: |m - value*10^k|
 * < 0.33 for m < 10^15). It is the only one of its length: 10^-k is more than twice the
 * gap between two doubles at 15 digits, so one m a k reads back. tests/unit/test_api.py
 * and test_prepare.py compare it with orjson's. */
static int
float_text(double value, char *out)
{
    char *at = out;
    if (signbit(value)) {
        *at++ = '-';
    }
    double magnitude = fabs(value);
    if (magnitude == 0) {
        memcpy(at, "0.0", 3);
        return (int)(at - out) + 3;
    }
    if (!(magnitude >= 1e-4 && magnitude < 1e15)) {
        return 0;
    }
    for (int k = 0; k < POWERS; k++) { /* k <= 19 in fact: then scaled >= 1e15 */
        double scaled = magnitude * POW10[k];
        if (scaled >= 1e15) {
            return 0; /* more than 15 digits */
        }
        double whole = nearbyint(scaled);
        if (whole / POW10[k] != magnitude) {
            continue;
        }
        char digits[24];
        char *end = digits + sizeof(digits), *first = digits_before(end, (uint64_t)whole, 0);
        int length = (int)(end - first);
        if (k == 0) {
            memcpy(at, first, (size_t)length);
            memcpy(at + length, ".0", 2);
            return (int)(at - out) + length + 2;
        }
        if (length > k) {
            memcpy(at, first, (size_t)(length - k));
            at += length - k;
            *at++ = '.';
            memcpy(at, end - k, (size_t)k);
            return (int)(at - out) + k;
        }
        *at++ = '0';
        *at++ = '.';
        memset(at, '0', (size_t)(k - length));
        at += k - length;
        memcpy(at, first, (size_t)length);
        return (int)(at - out) + length;
    }
    return 0;
}

/* The index of `encoding` among the kinds (matched by identity), or `count` if none. */
static Py_ssize_t
kind_index(PyObject *const *kind_of, Py_ssize_t count, PyObject *encoding)
{
    Py_ssize_t k = 0;
    while (k < count && kind_of[k] != encoding) {
        k++;
    }
    return k;
}

/* The segments of each kind met, as [(kind's index, segments)] in the order met. */
static PyObject *
kind_sums(const int *order, Py_ssize_t met, const long long *sums)
{
    PyObject *list = PyList_New(met);
    for (Py_ssize_t j = 0; list != NULL && j < met; j++) {
        PyObject *pair = Py_BuildValue("(iL)", order[j], sums[order[j]]);
        if (pair == NULL) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, j, pair);
    }
    return list;
}

PyDoc_STRVAR(accepted_lines_doc,
"accepted_lines(entries, ids, middle, kinds, dumps) -> (bytes, sums, smart, saved) | None\n\n"
"dispatcher.writers.Outputs._accepted_plain's result lines of a batch, one a\n"
"(Entry, id): '{\"line\":L,\"to\":\"T\"' + middle + id + '\",\"segments\":N' + the tail\n"
"of the entry's encoding [+ ',\"replaced\":R'] [+ ',\"ref\":' + dumps(ref)] + '}\\n'.\n"
"kinds is a tuple of (encoding, tail) pairs, matched by identity; sums are (kind's\n"
"index, its segments) for the kinds met, in the order of their first entry; smart\n"
"counts the entries with replacements and saved sums their saved\n"
"segments. None (the caller's own loops) for a number or id that is not JSON text as it\n"
"is (printable ASCII but quote and backslash), an entry of another encoding or an int\n"
"beyond 64 bits.");

static PyObject *
accepted_lines(PyObject *self, PyObject *args)
{
    PyObject *entries_obj, *ids_obj, *middle, *kinds, *dumps;
    if (!PyArg_ParseTuple(args, "OOUO!O:accepted_lines", &entries_obj, &ids_obj, &middle,
                          &PyTuple_Type, &kinds, &dumps)) {
        return NULL;
    }
    Py_ssize_t kind_count = PyTuple_GET_SIZE(kinds);
    if (kind_count < 1 || kind_count > 8) {
        PyErr_SetString(PyExc_ValueError, "accepted_lines: 1 to 8 kinds");
        return NULL;
    }
    PyObject *kind_of[8];
    const char *tail_of[8];
    Py_ssize_t tail_size[8];
    long long sums[8] = {0};
    int seen[8] = {0}, order[8]; /* the kinds met, in the order of their first entry */
    Py_ssize_t kinds_met = 0;
    for (Py_ssize_t k = 0; k < kind_count; k++) {
        PyObject *pair = PyTuple_GET_ITEM(kinds, k);
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
            PyErr_SetString(PyExc_TypeError, "accepted_lines: kinds of (encoding, tail)");
            return NULL;
        }
        kind_of[k] = PyTuple_GET_ITEM(pair, 0);
        tail_of[k] = utf8_of(PyTuple_GET_ITEM(pair, 1), &tail_size[k]);
        if (tail_of[k] == NULL) {
            return NULL;
        }
    }
    Py_ssize_t middle_size;
    const char *middle_text = utf8_of(middle, &middle_size);
    if (middle_text == NULL) {
        return NULL;
    }
    PyObject *entries = PySequence_Fast(entries_obj, "accepted_lines: a list of entries");
    if (entries == NULL) {
        return NULL;
    }
    PyObject *ids = PySequence_Fast(ids_obj, "accepted_lines: a list of ids");
    if (ids == NULL) {
        Py_DECREF(entries);
        return NULL;
    }
    PyObject *result = NULL;
    Buffer out = {NULL, 0, 0};
    long long smart = 0, saved = 0;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(entries);
    if (PySequence_Fast_GET_SIZE(ids) != n) {
        PyErr_SetString(PyExc_ValueError, "accepted_lines: an id an entry");
        goto done;
    }
    /* a line is 100 to 190 bytes (an id of 36, a ref): room for most batches at once */
    if (buffer_reserve(&out, (size_t)n * 224 + 256) < 0) {
        goto done;
    }
    PyObject **entry_items = PySequence_Fast_ITEMS(entries), **id_items = PySequence_Fast_ITEMS(ids);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *entry = entry_items[i];
        if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) < 9) {
            goto fallback;
        }
        PyObject *line = PyTuple_GET_ITEM(entry, 0), *to = PyTuple_GET_ITEM(entry, 1),
                 *ref = PyTuple_GET_ITEM(entry, 3), *segments = PyTuple_GET_ITEM(entry, 4),
                 *encoding = PyTuple_GET_ITEM(entry, 5), *replaced = PyTuple_GET_ITEM(entry, 7),
                 *saved_here = PyTuple_GET_ITEM(entry, 8), *id = id_items[i];
        Py_ssize_t k = kind_index(kind_of, kind_count, encoding);
        if (k == kind_count || !PyLong_CheckExact(line) || !PyLong_CheckExact(segments) ||
            !PyLong_CheckExact(replaced) || !PyLong_CheckExact(saved_here) || !verbatim(to) ||
            !verbatim(id)) {
            goto fallback;
        }
        int overflow = 0, more = 0;
        long long line_value = PyLong_AsLongLongAndOverflow(line, &overflow);
        more |= overflow;
        long long segment_count = PyLong_AsLongLongAndOverflow(segments, &overflow);
        more |= overflow;
        long long replaced_count = PyLong_AsLongLongAndOverflow(replaced, &overflow);
        more |= overflow;
        long long saved_count = PyLong_AsLongLongAndOverflow(saved_here, &overflow);
        if (more | overflow) {
            goto fallback;
        }
        if (PUT_LITERAL(&out, "{\"line\":") < 0 || buffer_put_int(&out, line_value) < 0 ||
            PUT_LITERAL(&out, ",\"to\":\"") < 0 ||
            buffer_put(&out, PyUnicode_DATA(to), (size_t)PyUnicode_GET_LENGTH(to)) < 0 ||
            PUT_LITERAL(&out, "\"") < 0 ||
            buffer_put(&out, middle_text, (size_t)middle_size) < 0 ||
            buffer_put(&out, PyUnicode_DATA(id), (size_t)PyUnicode_GET_LENGTH(id)) < 0 ||
            PUT_LITERAL(&out, "\",\"segments\":") < 0 ||
            buffer_put_int(&out, segment_count) < 0 ||
            buffer_put(&out, tail_of[k], (size_t)tail_size[k]) < 0) {
            goto done;
        }
        sums[k] += segment_count;
        if (!seen[k]) {
            seen[k] = 1;
            order[kinds_met++] = (int)k;
        }
        if (replaced_count) {
            smart++;
            saved += saved_count;
            if (PUT_LITERAL(&out, ",\"replaced\":") < 0 ||
                buffer_put_int(&out, replaced_count) < 0) {
                goto done;
            }
        }
        if (ref != Py_None) {
            PyObject *json = PyObject_CallOneArg(dumps, ref);
            if (json == NULL) {
                goto done;
            }
            if (!PyBytes_Check(json)) {
                Py_DECREF(json);
                PyErr_SetString(PyExc_TypeError, "accepted_lines: dumps must return bytes");
                goto done;
            }
            int failed = PUT_LITERAL(&out, ",\"ref\":") < 0 ||
                         buffer_put(&out, PyBytes_AS_STRING(json), (size_t)PyBytes_GET_SIZE(json)) < 0;
            Py_DECREF(json);
            if (failed) {
                goto done;
            }
        }
        if (PUT_LITERAL(&out, "}\n") < 0) {
            goto done;
        }
    }
    PyObject *text = PyBytes_FromStringAndSize(out.data ? out.data : "", (Py_ssize_t)out.size);
    if (text == NULL) {
        goto done;
    }
    PyObject *sum_list = kind_sums(order, kinds_met, sums);
    if (sum_list == NULL) {
        Py_DECREF(text);
        goto done;
    }
    result = Py_BuildValue("(NNLL)", text, sum_list, smart, saved);
    goto done;
fallback:
    result = Py_NewRef(Py_None);
done:
    PyMem_Free(out.data);
    Py_DECREF(entries);
    Py_DECREF(ids);
    return result;
}

/* ---- the segment count of texts ------------------------------------------------------ */

PyDoc_STRVAR(segment_counts_doc,
"segment_counts(texts, classes, gsm7, ucs2, three_gpp) -> (list, left, most)\n\n"
"dispatcher.segments.count for each text, from its tables: classes (65536 bytes) tells\n"
"each BMP character 1 for a one-septet GSM-7 character, 2 for an extension one (two\n"
"septets), 0 for none (UCS-2); a character beyond the BMP is UCS-2, two units. The\n"
"count of a text is gsm7[units] or ucs2[units] (the cached SegmentCounts of the\n"
"model); None where the model needs more than the units (3gpp: a multipart GSM-7 text\n"
"with extension characters, a multipart UCS-2 text) or the table is too short: the\n"
"caller counts those texts itself. left is how many it left so, most the most segments\n"
"of the others (0 for none).");

static PyObject *
segment_counts(PyObject *self, PyObject *args)
{
    PyObject *texts_obj, *gsm7, *ucs2;
    Py_buffer classes;
    int three_gpp;
    if (!PyArg_ParseTuple(args, "Oy*O!O!p:segment_counts", &texts_obj, &classes, &PyTuple_Type,
                          &gsm7, &PyTuple_Type, &ucs2, &three_gpp)) {
        return NULL;
    }
    PyObject *result = NULL, *texts = NULL;
    if (classes.len != 65536) {
        PyErr_SetString(PyExc_ValueError, "segment_counts: classes of 65536 bytes");
        goto done;
    }
    texts = PySequence_Fast(texts_obj, "segment_counts: a list of str");
    if (texts == NULL) {
        goto done;
    }
    const unsigned char *class_of = classes.buf;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(texts), gsm7_size = PyTuple_GET_SIZE(gsm7),
               ucs2_size = PyTuple_GET_SIZE(ucs2);
    PyObject **items = PySequence_Fast_ITEMS(texts);
    PyObject *counts = PyList_New(n);
    Py_ssize_t left = 0, most = 0;
    if (counts == NULL) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *text = items[i];
        if (!PyUnicode_Check(text)) {
            Py_CLEAR(counts);
            PyErr_Format(PyExc_TypeError, "segment_counts: item %zd is not a str", i);
            goto done;
        }
        int kind = PyUnicode_KIND(text);
        const void *data = PyUnicode_DATA(text);
        Py_ssize_t length = PyUnicode_GET_LENGTH(text), doubles = 0, wide = 0;
        int ucs = 0;
        if (kind == PyUnicode_1BYTE_KIND) {
            const Py_UCS1 *c = data;
            for (Py_ssize_t j = 0; j < length; j++) {
                unsigned char cls = class_of[c[j]];
                ucs |= cls == 0;
                doubles += cls == 2;
            }
        }
        else {
            for (Py_ssize_t j = 0; j < length; j++) {
                Py_UCS4 cp = PyUnicode_READ(kind, data, j);
                if (cp > 0xFFFF) {
                    ucs = 1;
                    wide++;
                    continue;
                }
                unsigned char cls = class_of[cp];
                ucs |= cls == 0;
                doubles += cls == 2;
            }
        }
        Py_ssize_t units = length + (ucs ? wide : doubles);
        PyObject *table = ucs ? ucs2 : gsm7;
        Py_ssize_t size = ucs ? ucs2_size : gsm7_size;
        int cached = units < size;
        if (three_gpp) {
            /* as dispatcher.segments.count: only what the units alone decide */
            cached &= ucs ? units <= 70 : (doubles == 0 || units <= 160);
        }
        PyObject *item = cached ? PyTuple_GET_ITEM(table, units) : Py_None;
        if (cached) {
            PyObject *segments = PyTuple_Check(item) && PyTuple_GET_SIZE(item) > 2
                                     ? PyTuple_GET_ITEM(item, 2)
                                     : NULL;
            Py_ssize_t value = segments != NULL ? PyLong_AsSsize_t(segments) : -1;
            if (value < 0) {
                Py_CLEAR(counts);
                if (!PyErr_Occurred()) {
                    PyErr_SetString(PyExc_TypeError, "segment_counts: (encoding, units, segments)");
                }
                goto done;
            }
            most = value > most ? value : most;
        }
        else {
            left++;
        }
        PyList_SET_ITEM(counts, i, Py_NewRef(item));
    }
    result = Py_BuildValue("(Nnn)", counts, left, most);
done:
    PyBuffer_Release(&classes);
    Py_XDECREF(texts);
    return result;
}

/* ---- a batch's recipients as the gateway's JSON (dispatcher.api.body) ---------------- */

/* A str as orjson writes it, when that is its characters in UTF-8 between quotes (no
 * quote, backslash, control character or surrogate): 1 written, 0 not (nothing
 * written), -1 an error. */
static int
put_json_str(Buffer *out, PyObject *text)
{
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    Py_ssize_t length = PyUnicode_GET_LENGTH(text);
    int ok = 1;
    if (kind == PyUnicode_1BYTE_KIND) {
        const Py_UCS1 *c = data;
        for (Py_ssize_t j = 0; j < length; j++) {
            ok &= (c[j] >= 0x20) & (c[j] != '"') & (c[j] != '\\');
        }
    }
    else {
        for (Py_ssize_t j = 0; j < length; j++) {
            Py_UCS4 cp = PyUnicode_READ(kind, data, j);
            /* a surrogate: orjson refuses it, and its error is the one to give */
            ok &= (cp >= 0x20) & (cp != '"') & (cp != '\\') & !(cp >= 0xD800 && cp <= 0xDFFF);
        }
    }
    if (!ok) {
        return 0;
    }
    if (buffer_reserve(out, out->size + 4 * (size_t)length + 2) < 0) {
        return -1;
    }
    out->data[out->size++] = '"';
    if (PyUnicode_IS_ASCII(text)) {
        memcpy(out->data + out->size, data, (size_t)length);
        out->size += (size_t)length;
    }
    else {
        out->size += utf8_encode(text, (unsigned char *)out->data + out->size);
    }
    out->data[out->size++] = '"';
    return 1;
}

/* A param as orjson writes it: 1 written, 0 not (a BigInt, an int beyond 64 bits, a str
 * to escape, anything else: orjson and json_default's), -1 an error. */
static int
put_json_param(Buffer *out, PyObject *value, PyObject *dumps)
{
    if (PyUnicode_CheckExact(value)) {
        return put_json_str(out, value);
    }
    if (PyLong_CheckExact(value)) {
        int overflow = 0;
        long long small = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (overflow == 0) {
            return small == -1 && PyErr_Occurred() ? -1 : buffer_put_int(out, small) < 0 ? -1 : 1;
        }
        if (overflow < 0) {
            return 0;
        }
        unsigned long long big = PyLong_AsUnsignedLongLong(value);
        if (big == (unsigned long long)-1 && PyErr_Occurred()) {
            PyErr_Clear(); /* beyond 64 bits */
            return 0;
        }
        return buffer_put_digits(out, big, 0) < 0 ? -1 : 1;
    }
    if (value == Py_True) {
        return PUT_LITERAL(out, "true") < 0 ? -1 : 1;
    }
    if (value == Py_False) {
        return PUT_LITERAL(out, "false") < 0 ? -1 : 1;
    }
    if (value == Py_None) {
        return PUT_LITERAL(out, "null") < 0 ? -1 : 1;
    }
    if (PyFloat_CheckExact(value)) {
        char text[FLOAT_TEXT];
        int length = float_text(PyFloat_AS_DOUBLE(value), text);
        if (length > 0) {
            return buffer_put(out, text, (size_t)length) < 0 ? -1 : 1;
        }
        PyObject *json = PyObject_CallOneArg(dumps, value);
        if (json == NULL) {
            return -1;
        }
        int written = !PyBytes_Check(json) ? 0
                      : buffer_put(out, PyBytes_AS_STRING(json), (size_t)PyBytes_GET_SIZE(json)) < 0
                          ? -1
                          : 1;
        Py_DECREF(json);
        return written;
    }
    return 0;
}

/* An entry's recipient in a batch body, {"to":"T","params":[...]}: 1 written, 0 not
 * (a number that is not JSON text as it is, params that are not a list or hold a
 * param put_json_param leaves to orjson), -1 an error. */
static int
put_recipient(Buffer *out, PyObject *entry, PyObject *dumps)
{
    if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) < 3) {
        return 0;
    }
    PyObject *to = PyTuple_GET_ITEM(entry, 1), *params = PyTuple_GET_ITEM(entry, 2);
    if (!verbatim(to) || !PyList_CheckExact(params)) {
        return 0;
    }
    if (PUT_LITERAL(out, "{\"to\":\"") < 0 ||
        buffer_put(out, PyUnicode_DATA(to), (size_t)PyUnicode_GET_LENGTH(to)) < 0 ||
        PUT_LITERAL(out, "\",\"params\":[") < 0) {
        return -1;
    }
    for (Py_ssize_t k = 0; k < PyList_GET_SIZE(params); k++) {
        if (k && PUT_LITERAL(out, ",") < 0) {
            return -1;
        }
        int written = put_json_param(out, PyList_GET_ITEM(params, k), dumps);
        if (written <= 0) {
            return written;
        }
    }
    return PUT_LITERAL(out, "]}") < 0 ? -1 : 1;
}

PyDoc_STRVAR(batch_recipients_doc,
"batch_recipients(entries, dumps, head, tail) -> bytes | None\n\n"
"A batch body: head, then the 'to' array as orjson writes [{\"to\": e.to, \"params\":\n"
"e.params} for e in entries], then tail (dispatcher.api.body): the entries' numbers\n"
"(printable ASCII) and params written here, a float by dumps(float). None where\n"
"orjson must write it\n"
"(a str to escape, an int beyond 64 bits, a BigInt, params that are not a list).");

static PyObject *
batch_recipients(PyObject *self, PyObject *args)
{
    PyObject *entries_obj, *dumps;
    Py_buffer head, tail;
    if (!PyArg_ParseTuple(args, "OOy*y*:batch_recipients", &entries_obj, &dumps, &head, &tail)) {
        return NULL;
    }
    PyObject *result = NULL;
    Buffer out = {NULL, 0, 0};
    PyObject *entries = PySequence_Fast(entries_obj, "batch_recipients: a list of entries");
    if (entries == NULL) {
        goto done;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(entries);
    PyObject **entry_of = PySequence_Fast_ITEMS(entries);
    /* ~50 bytes a recipient: one allocation, and the body made once */
    if (buffer_reserve(&out, (size_t)(head.len + tail.len) + (size_t)n * 64 + 64) < 0 ||
        buffer_put(&out, head.buf, (size_t)head.len) < 0 || PUT_LITERAL(&out, "[") < 0) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (i && PUT_LITERAL(&out, ",") < 0) {
            goto done;
        }
        int written = put_recipient(&out, entry_of[i], dumps);
        if (written < 0) {
            goto done;
        }
        if (written == 0) {
            goto fallback;
        }
    }
    if (PUT_LITERAL(&out, "]") < 0 || buffer_put(&out, tail.buf, (size_t)tail.len) < 0) {
        goto done;
    }
    result = PyBytes_FromStringAndSize(out.data, (Py_ssize_t)out.size);
    goto done;
fallback:
    result = Py_NewRef(Py_None);
done:
    PyMem_Free(out.data);
    Py_XDECREF(entries);
    PyBuffer_Release(&head);
    PyBuffer_Release(&tail);
    return result;
}

/* ---- a closed batch packed while its entries are in the cache (models.Packed) ---------- */

/* A bytes object of a buffer's bytes (b"" for an empty one). */
static PyObject *
buffer_bytes(const Buffer *b)
{
    return PyBytes_FromStringAndSize(b->data ? b->data : "", (Py_ssize_t)b->size);
}

PyDoc_STRVAR(pack_batch_doc,
"pack_batch(entries, kinds, dumps, head, tail)\n"
"    -> (body, numbers, lines, segments, kinds, pieces, ends, refs, sums) | None\n\n"
"What the batch endpoint's send of a closed batch needs of its entries, made while they\n"
"are in the cache (dispatcher.models.Packed): the body (batch_recipients' bytes); the\n"
"numbers, each followed by '\\n'; the lines and segments (int64 each, native order);\n"
"each entry's kind (one byte: its index in kinds, a tuple of (encoding, its JSON text)\n"
"matched by identity); the pieces of each accepted result line but the id and what\n"
"follows the encoding — '{\"line\":L,\"to\":\"T\"', '\",\"segments\":N,\"encoding\":E',\n"
"'[,\"ref\":dumps(ref)]}\\n' — with ends (uint32, three an entry: where each piece ends);\n"
"refs (a list, one an entry, or None when no entry has one); sums ((kind index, segments)\n"
"in the order of the kinds' first entries). None when an entry is not of that usual\n"
"form: a kept text, smart-encoding replacements, a line or segments beyond 64 bits,\n"
"another encoding, or what batch_recipients leaves to orjson.");

/* Bytes written at `at`, and past them (pack_batch's writes into room reserved). */
static inline char *
put_raw(char *at, const void *bytes, size_t count)
{
    memcpy(at, bytes, count);
    return at + count;
}

#define PUT_RAW_LITERAL(at, text) put_raw((at), (text), sizeof(text) - 1)

/* A whole number's decimal text at `at`, and past it. */
static inline char *
put_raw_int(char *at, long long value)
{
    char digits[24];
    unsigned long long magnitude = value < 0 ? 0ULL - (unsigned long long)value : (unsigned long long)value;
    char *end = digits + sizeof(digits), *first = digits_before(end, magnitude, value < 0);
    return put_raw(at, first, (size_t)(end - first));
}

static PyObject *
pack_batch(PyObject *self, PyObject *args)
{
    PyObject *entries_obj, *kinds, *dumps;
    Py_buffer head, tail;
    if (!PyArg_ParseTuple(args, "OO!Oy*y*:pack_batch", &entries_obj, &PyTuple_Type, &kinds,
                          &dumps, &head, &tail)) {
        return NULL;
    }
    PyObject *result = NULL, *entries = NULL, *refs = NULL, *lines = NULL, *segments = NULL,
             *kind_bytes = NULL, *ends = NULL;
    Buffer body = {NULL, 0, 0}, numbers = {NULL, 0, 0}, pieces = {NULL, 0, 0};
    Py_ssize_t kind_count = PyTuple_GET_SIZE(kinds);
    PyObject *kind_of[8];
    const char *text_of[8];
    Py_ssize_t text_size[8];
    long long sums[8] = {0};
    int seen[8] = {0}, order[8];
    Py_ssize_t kinds_met = 0;
    if (kind_count < 1 || kind_count > 8) {
        PyErr_SetString(PyExc_ValueError, "pack_batch: 1 to 8 kinds");
        goto done;
    }
    for (Py_ssize_t k = 0; k < kind_count; k++) {
        PyObject *pair = PyTuple_GET_ITEM(kinds, k);
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2 ||
            !PyBytes_Check(PyTuple_GET_ITEM(pair, 1)) ||
            PyBytes_GET_SIZE(PyTuple_GET_ITEM(pair, 1)) > 64) {
            PyErr_SetString(PyExc_TypeError, "pack_batch: kinds of (encoding, bytes of 64 at most)");
            goto done;
        }
        kind_of[k] = PyTuple_GET_ITEM(pair, 0);
        text_of[k] = PyBytes_AS_STRING(PyTuple_GET_ITEM(pair, 1));
        text_size[k] = PyBytes_GET_SIZE(PyTuple_GET_ITEM(pair, 1));
    }
    entries = PySequence_Fast(entries_obj, "pack_batch: a list of entries");
    if (entries == NULL) {
        goto done;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(entries);
    PyObject **entry_of = PySequence_Fast_ITEMS(entries);
    size_t room = (size_t)(n ? n : 1);
    /* the fixed-size columns made at their size, written in place */
    lines = PyBytes_FromStringAndSize(NULL, n * 8);
    segments = PyBytes_FromStringAndSize(NULL, n * 8);
    kind_bytes = PyBytes_FromStringAndSize(NULL, n);
    ends = PyBytes_FromStringAndSize(NULL, n * 12);
    if (lines == NULL || segments == NULL || kind_bytes == NULL || ends == NULL ||
        buffer_reserve(&body, (size_t)(head.len + tail.len) + room * 64 + 64) < 0 ||
        buffer_reserve(&numbers, room * 16) < 0 || buffer_reserve(&pieces, room * 96) < 0 ||
        buffer_put(&body, head.buf, (size_t)head.len) < 0 || PUT_LITERAL(&body, "[") < 0) {
        goto done;
    }
    int64_t *line_at = (int64_t *)PyBytes_AS_STRING(lines),
            *segments_at = (int64_t *)PyBytes_AS_STRING(segments);
    unsigned char *kind_at = (unsigned char *)PyBytes_AS_STRING(kind_bytes);
    uint32_t *end_at = (uint32_t *)PyBytes_AS_STRING(ends);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *entry = entry_of[i];
        if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) < 9) {
            goto fallback;
        }
        PyObject *line = PyTuple_GET_ITEM(entry, 0), *to = PyTuple_GET_ITEM(entry, 1),
                 *ref = PyTuple_GET_ITEM(entry, 3), *count = PyTuple_GET_ITEM(entry, 4),
                 *encoding = PyTuple_GET_ITEM(entry, 5), *text = PyTuple_GET_ITEM(entry, 6),
                 *replaced = PyTuple_GET_ITEM(entry, 7), *saved = PyTuple_GET_ITEM(entry, 8);
        Py_ssize_t k = kind_index(kind_of, kind_count, encoding);
        /* no replacements and nothing saved: exactly the ints 0 (a bool is not one) */
        if (k == kind_count || text != Py_None || !PyLong_CheckExact(line) ||
            !PyLong_CheckExact(count) || !PyLong_CheckExact(replaced) ||
            !PyLong_CheckExact(saved) || _PyLong_Sign(replaced) != 0 || _PyLong_Sign(saved) != 0) {
            goto fallback;
        }
        int overflow = 0, more = 0;
        long long line_value = PyLong_AsLongLongAndOverflow(line, &overflow);
        more |= overflow;
        long long segment_count = PyLong_AsLongLongAndOverflow(count, &overflow);
        if (more | overflow) {
            goto fallback;
        }
        if (i && PUT_LITERAL(&body, ",") < 0) {
            goto done;
        }
        int written = put_recipient(&body, entry, dumps); /* checks the number is verbatim */
        if (written < 0) {
            goto done;
        }
        if (written == 0) {
            goto fallback;
        }
        const char *digits = PyUnicode_DATA(to);
        size_t length = (size_t)PyUnicode_GET_LENGTH(to);
        line_at[i] = line_value;
        segments_at[i] = segment_count;
        kind_at[i] = (unsigned char)k;
        /* the number and its newline; the pieces but a ref: room for them all first */
        if (buffer_reserve(&numbers, numbers.size + length + 1) < 0 ||
            buffer_reserve(&pieces, pieces.size + length + (size_t)text_size[k] + 96) < 0) {
            goto done;
        }
        char *at = put_raw(numbers.data + numbers.size, digits, length);
        *at++ = '\n';
        numbers.size = (size_t)(at - numbers.data);
        at = pieces.data + pieces.size;
        at = PUT_RAW_LITERAL(at, "{\"line\":");
        at = put_raw_int(at, line_value);
        at = PUT_RAW_LITERAL(at, ",\"to\":\"");
        at = put_raw(at, digits, length);
        *at++ = '"';
        end_at[3 * i] = (uint32_t)(at - pieces.data);
        at = PUT_RAW_LITERAL(at, "\",\"segments\":");
        at = put_raw_int(at, segment_count);
        at = PUT_RAW_LITERAL(at, ",\"encoding\":");
        at = put_raw(at, text_of[k], (size_t)text_size[k]);
        end_at[3 * i + 1] = (uint32_t)(at - pieces.data);
        pieces.size = (size_t)(at - pieces.data);
        if (ref != Py_None) {
            if (refs == NULL) { /* the first ref: None for the entries before it */
                refs = PyList_New(n);
                if (refs == NULL) {
                    goto done;
                }
                for (Py_ssize_t j = 0; j < n; j++) {
                    PyList_SET_ITEM(refs, j, Py_NewRef(Py_None));
                }
            }
            Py_SETREF(PyList_GET_ITEM(refs, i), Py_NewRef(ref));
            PyObject *json = PyObject_CallOneArg(dumps, ref);
            if (json == NULL) {
                if (PyErr_ExceptionMatches(PyExc_TypeError)) { /* the careful path's to say */
                    PyErr_Clear();
                    goto fallback;
                }
                goto done;
            }
            if (!PyBytes_Check(json)) {
                Py_DECREF(json);
                PyErr_SetString(PyExc_TypeError, "pack_batch: dumps must return bytes");
                goto done;
            }
            int failed = PUT_LITERAL(&pieces, ",\"ref\":") < 0 ||
                         buffer_put(&pieces, PyBytes_AS_STRING(json), (size_t)PyBytes_GET_SIZE(json)) < 0;
            Py_DECREF(json);
            if (failed) {
                goto done;
            }
        }
        if (PUT_LITERAL(&pieces, "}\n") < 0) {
            goto done;
        }
        if (pieces.size > UINT32_MAX) {
            goto fallback;
        }
        end_at[3 * i + 2] = (uint32_t)pieces.size;
        sums[k] += segment_count;
        if (!seen[k]) {
            seen[k] = 1;
            order[kinds_met++] = (int)k;
        }
    }
    if (PUT_LITERAL(&body, "]") < 0 || buffer_put(&body, tail.buf, (size_t)tail.len) < 0) {
        goto done;
    }
    PyObject *sum_list = kind_sums(order, kinds_met, sums);
    if (sum_list == NULL) {
        goto done;
    }
    result = Py_BuildValue("(NNOOONOON)", buffer_bytes(&body), buffer_bytes(&numbers), lines,
                           segments, kind_bytes, buffer_bytes(&pieces), ends,
                           refs ? refs : Py_None, sum_list);
    goto done;
fallback:
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(refs);
    Py_XDECREF(entries);
    Py_XDECREF(lines);
    Py_XDECREF(segments);
    Py_XDECREF(kind_bytes);
    Py_XDECREF(ends);
    PyMem_Free(body.data);
    PyMem_Free(numbers.data);
    PyMem_Free(pieces.data);
    PyBuffer_Release(&head);
    PyBuffer_Release(&tail);
    return result;
}

PyDoc_STRVAR(accepted_packed_doc,
"accepted_packed(pieces, ends, ids, middle, after) -> bytes | None\n\n"
"The accepted result lines of a packed batch (pack_batch's pieces and ends), an id each:\n"
"first piece + middle + id + second piece + after + third piece; the same bytes as\n"
"accepted_lines for the entries packed. None when an id is not JSON text as it is.");

static PyObject *
accepted_packed(PyObject *self, PyObject *args)
{
    Py_buffer pieces, ends, middle, after;
    PyObject *ids_obj, *result = NULL;
    if (!PyArg_ParseTuple(args, "y*y*Oy*y*:accepted_packed", &pieces, &ends, &ids_obj, &middle,
                          &after)) {
        return NULL;
    }
    Buffer out = {NULL, 0, 0};
    PyObject *ids = PySequence_Fast(ids_obj, "accepted_packed: a list of ids");
    if (ids == NULL) {
        goto done;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(ids);
    if (ends.len != n * 12) {
        PyErr_SetString(PyExc_ValueError, "accepted_packed: an id an entry");
        goto done;
    }
    PyObject **id_items = PySequence_Fast_ITEMS(ids);
    const uint32_t *end = ends.buf;
    const char *piece = pieces.buf;
    if ((n && end[3 * n - 1] != (uint64_t)pieces.len) ||
        buffer_reserve(&out, (size_t)pieces.len + (size_t)n * (size_t)(middle.len + after.len + 40)) < 0) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_ValueError, "accepted_packed: ends do not fit the pieces");
        }
        goto done;
    }
    uint32_t start = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *id = id_items[i];
        uint32_t a = end[3 * i], b = end[3 * i + 1], c = end[3 * i + 2];
        if (!verbatim(id)) {
            result = Py_NewRef(Py_None);
            goto done;
        }
        if (a < start || b < a || c < b || c > (uint64_t)pieces.len) {
            PyErr_SetString(PyExc_ValueError, "accepted_packed: ends do not fit the pieces");
            goto done;
        }
        size_t id_size = (size_t)PyUnicode_GET_LENGTH(id);
        if (buffer_reserve(&out, out.size + (c - start) + (size_t)(middle.len + after.len) + id_size) < 0) {
            goto done;
        }
        char *at = put_raw(out.data + out.size, piece + start, a - start);
        at = put_raw(at, middle.buf, (size_t)middle.len);
        at = put_raw(at, PyUnicode_DATA(id), id_size);
        at = put_raw(at, piece + a, b - a);
        at = put_raw(at, after.buf, (size_t)after.len);
        at = put_raw(at, piece + b, c - b);
        out.size = (size_t)(at - out.data);
        start = c;
    }
    result = buffer_bytes(&out);
done:
    PyMem_Free(out.data);
    Py_XDECREF(ids);
    PyBuffer_Release(&pieces);
    PyBuffer_Release(&ends);
    PyBuffer_Release(&middle);
    PyBuffer_Release(&after);
    return result;
}

/* ---- the plain lines of a chunk (dispatcher.prepare.Preparer._columns) --------------- */

/* A record's fields, read at their offsets: the member descriptors of its type (a
 * msgspec Struct: every field is a slot). Order: line, to, params, ref, then the five
 * overrides (from, text, externalId, clientId, email). */
#define FIELDS 9
enum { F_LINE, F_TO, F_PARAMS, F_REF, F_OVERRIDES };

typedef struct {
    PyTypeObject *type;
    Py_ssize_t offset[FIELDS];
} Fields;

static int
fields_of(PyObject *type, PyObject *descriptors, Fields *fields)
{
    if (!PyType_Check(type) || !PyTuple_Check(descriptors) ||
        PyTuple_GET_SIZE(descriptors) != FIELDS) {
        PyErr_SetString(PyExc_TypeError, "a type and a tuple of its 9 member descriptors");
        return -1;
    }
    fields->type = (PyTypeObject *)type;
    for (Py_ssize_t k = 0; k < FIELDS; k++) {
        PyObject *d = PyTuple_GET_ITEM(descriptors, k);
        if (!Py_IS_TYPE(d, &PyMemberDescr_Type) ||
            ((PyMemberDescrObject *)d)->d_common.d_type != fields->type ||
            (((PyMemberDescrObject *)d)->d_member->type != T_OBJECT_EX &&
             ((PyMemberDescrObject *)d)->d_member->type != T_OBJECT)) {
            PyErr_Format(PyExc_TypeError, "descriptor %zd is not an object slot of the type", k);
            return -1;
        }
        fields->offset[k] = ((PyMemberDescrObject *)d)->d_member->offset;
    }
    return 0;
}

/* A field of a record of the type (a borrowed reference; NULL if unset). */
#define FIELD(item, fields, k) (*(PyObject **)((char *)(item) + (fields)->offset[k]))

#define MAX_DIGITS 15
#define MIN_DIGITS 8

/* dispatcher.numbers.normalize of an ASCII str: "+" and its digits, or None; the
 * separators " -.()\t" deleted first. */
static PyObject *
normalize_ascii(PyObject *raw)
{
    const Py_UCS1 *c = PyUnicode_1BYTE_DATA(raw);
    Py_ssize_t length = PyUnicode_GET_LENGTH(raw), size = 0;
    char digits[MAX_DIGITS + 2];
    int plus = 0, clean = 1;
    for (Py_ssize_t j = 0; j < length; j++) {
        unsigned char ch = c[j];
        if (ch >= '0' && ch <= '9') {
            if (size == MAX_DIGITS) {
                Py_RETURN_NONE; /* too long */
            }
            digits[1 + size++] = (char)ch;
        }
        else if (ch == '+' && size == 0 && !plus) {
            plus = 1;
            clean &= j == 0;
        }
        else if (ch == ' ' || ch == '-' || ch == '.' || ch == '(' || ch == ')' || ch == '\t') {
            clean = 0;
        }
        else {
            Py_RETURN_NONE; /* a letter, a second +, a control character, ... */
        }
    }
    if (size < MIN_DIGITS || digits[1] == '0') {
        Py_RETURN_NONE;
    }
    if (clean && plus) {
        return Py_NewRef(raw); /* already "+<digits>" */
    }
    digits[0] = '+';
    return PyUnicode_FromStringAndSize(digits, size + 1);
}

PyDoc_STRVAR(chunk_numbers_doc,
"chunk_numbers(items, type, descriptors, normalize) -> list\n\n"
"The normalised number of each item (dispatcher.numbers.normalize_many of their 'to'):\n"
"a record of `type` with an ASCII 'to' here, one with another str by\n"
"normalize(to) (str or None); None for any other item (a rejected line).");

static PyObject *
chunk_numbers(PyObject *self, PyObject *args)
{
    PyObject *items_obj, *type, *descriptors, *normalize;
    Fields fields;
    if (!PyArg_ParseTuple(args, "OOO!O:chunk_numbers", &items_obj, &type, &PyTuple_Type,
                          &descriptors, &normalize) ||
        fields_of(type, descriptors, &fields) < 0) {
        return NULL;
    }
    PyObject *items = PySequence_Fast(items_obj, "chunk_numbers: a list of items");
    if (items == NULL) {
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(items);
    PyObject **item_of = PySequence_Fast_ITEMS(items);
    PyObject *result = PyList_New(n);
    if (result == NULL) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = item_of[i], *number;
        PyObject *raw = Py_IS_TYPE(item, fields.type) ? FIELD(item, &fields, F_TO) : NULL;
        if (raw == NULL) {
            number = Py_NewRef(Py_None);
        }
        else if (PyUnicode_CheckExact(raw) && PyUnicode_IS_ASCII(raw)) {
            number = normalize_ascii(raw);
        }
        else {
            number = PyObject_CallOneArg(normalize, raw);
        }
        if (number == NULL) {
            Py_CLEAR(result);
            goto done;
        }
        PyList_SET_ITEM(result, i, number);
    }
done:
    Py_DECREF(items);
    return result;
}

/* A str of ASCII bytes, made at its size. */
static PyObject *
ascii_text(const char *bytes, Py_ssize_t size)
{
    PyObject *text = PyUnicode_New(size, 127);
    if (text != NULL) {
        memcpy(PyUnicode_DATA(text), bytes, (size_t)size);
    }
    return text;
}

/* The text of a param as dispatcher.renderer renders it (a new reference), or NULL with
 * no error where only the renderer can say (a float orjson might write differently
 * from repr, a BigInt, null, an array, ...). */
static PyObject *
param_text(PyObject *value, PyObject *dumps)
{
    if (PyUnicode_CheckExact(value)) {
        return Py_NewRef(value);
    }
    if (PyLong_CheckExact(value)) {
        int overflow = 0;
        long long small = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (overflow != 0) {
            return PyObject_Str(value);
        }
        if (small == -1 && PyErr_Occurred()) {
            return NULL;
        }
        char digits[24];
        char *end = digits + sizeof(digits);
        char *first = digits_before(
            end, small < 0 ? 0ULL - (unsigned long long)small : (unsigned long long)small, small < 0);
        return ascii_text(first, end - first);
    }
    if (value == Py_True) {
        return PyUnicode_FromStringAndSize("true", 4);
    }
    if (value == Py_False) {
        return PyUnicode_FromStringAndSize("false", 5);
    }
    if (PyFloat_CheckExact(value)) {
        /* as orjson writes it (dumps): Python's repr takes ~1 100 instructions a float
         * (dtoa.c), orjson's ~150 and the call ~600 more; NaN and the infinities (null)
         * are the renderer's */
        char text[FLOAT_TEXT];
        int length = float_text(PyFloat_AS_DOUBLE(value), text);
        if (length > 0) {
            return ascii_text(text, length);
        }
        PyObject *json = PyObject_CallOneArg(dumps, value);
        if (json == NULL) {
            return NULL;
        }
        PyObject *out = NULL;
        if (!PyBytes_Check(json)) {
            PyErr_SetString(PyExc_TypeError, "plain_texts: dumps must return bytes");
        }
        else if (!(PyBytes_GET_SIZE(json) == 4 && memcmp(PyBytes_AS_STRING(json), "null", 4) == 0)) {
            out = PyUnicode_DecodeASCII(PyBytes_AS_STRING(json), PyBytes_GET_SIZE(json), NULL);
        }
        Py_DECREF(json);
        return out;
    }
    return NULL;
}

#define MAX_SLOTS 8

/* A template's text from its literals and the params' texts: a new str, or NULL with no
 * error set where the renderer must do it. */
static PyObject *
render_one(PyObject *params, PyObject **literal, const Py_ssize_t *index, Py_ssize_t slots,
           PyObject *dumps)
{
    if (!PyList_CheckExact(params)) {
        return NULL;
    }
    PyObject *part[MAX_SLOTS] = {NULL};
    Py_ssize_t length = 0;
    Py_UCS4 widest = 0;
    PyObject *out = NULL;
    Py_ssize_t have = PyList_GET_SIZE(params), s;
    for (s = 0; s < slots; s++) {
        if (index[s] >= have || (part[s] = param_text(PyList_GET_ITEM(params, index[s]), dumps)) == NULL) {
            goto done;
        }
        length += PyUnicode_GET_LENGTH(part[s]);
        Py_UCS4 most = PyUnicode_MAX_CHAR_VALUE(part[s]);
        widest = most > widest ? most : widest;
    }
    for (s = 0; s <= slots; s++) {
        length += PyUnicode_GET_LENGTH(literal[s]);
        Py_UCS4 most = PyUnicode_MAX_CHAR_VALUE(literal[s]);
        widest = most > widest ? most : widest;
    }
    out = PyUnicode_New(length, widest);
    if (out == NULL) {
        goto done;
    }
    Py_ssize_t at = 0;
    for (s = 0; s <= slots; s++) {
        PyObject *pieces[2] = {literal[s], s < slots ? part[s] : NULL};
        for (int p = 0; p < 2 && pieces[p] != NULL; p++) {
            Py_ssize_t size = PyUnicode_GET_LENGTH(pieces[p]);
            if (PyUnicode_CopyCharacters(out, at, pieces[p], 0, size) < 0) {
                Py_CLEAR(out);
                goto done;
            }
            at += size;
        }
    }
done:
    for (s = 0; s < slots; s++) {
        Py_XDECREF(part[s]);
    }
    return out;
}

PyDoc_STRVAR(plain_texts_doc,
"plain_texts(items, numbers, type, descriptors, literals, indexes, render, dumps)\n"
"    -> (specials, texts) | None\n\n"
"Preparer._columns' first half: the positions of the items that are not plain\n"
"(not a record of `type`, no number, or one of the five overrides set), and the\n"
"template's text for each plain one, rendered from the literals (a tuple of str, one\n"
"more than indexes) and the params at `indexes`: here where every param is a str, an\n"
"int, a bool or a finite float (as dumps(float), orjson's, writes it), by\n"
"render(params) (the Python renderer, whose errors pass through) otherwise. None\n"
"where the template has more than 8 placeholders or a field is unset.");

static PyObject *
plain_texts(PyObject *self, PyObject *args)
{
    PyObject *items_obj, *numbers_obj, *type, *descriptors, *literals, *indexes, *render, *dumps;
    Fields fields;
    if (!PyArg_ParseTuple(args, "OOOO!O!O!OO:plain_texts", &items_obj, &numbers_obj, &type,
                          &PyTuple_Type, &descriptors, &PyTuple_Type, &literals,
                          &PyTuple_Type, &indexes, &render, &dumps) ||
        fields_of(type, descriptors, &fields) < 0) {
        return NULL;
    }
    Py_ssize_t slots = PyTuple_GET_SIZE(indexes);
    if (PyTuple_GET_SIZE(literals) != slots + 1) {
        PyErr_SetString(PyExc_ValueError, "plain_texts: one literal more than indexes");
        return NULL;
    }
    if (slots > MAX_SLOTS) {
        Py_RETURN_NONE;
    }
    PyObject *literal[MAX_SLOTS + 1];
    Py_ssize_t index[MAX_SLOTS];
    for (Py_ssize_t s = 0; s <= slots; s++) {
        literal[s] = PyTuple_GET_ITEM(literals, s);
        if (!PyUnicode_Check(literal[s])) {
            PyErr_SetString(PyExc_TypeError, "plain_texts: literals of str");
            return NULL;
        }
        if (s < slots) {
            index[s] = PyLong_AsSsize_t(PyTuple_GET_ITEM(indexes, s));
            if (index[s] < 0) {
                if (!PyErr_Occurred()) {
                    PyErr_SetString(PyExc_ValueError, "plain_texts: indexes from 0");
                }
                return NULL;
            }
        }
    }
    PyObject *items = PySequence_Fast(items_obj, "plain_texts: a list of items");
    if (items == NULL) {
        return NULL;
    }
    PyObject *numbers = PySequence_Fast(numbers_obj, "plain_texts: a list of numbers");
    PyObject *specials = NULL, *texts = NULL, *result = NULL;
    if (numbers == NULL) {
        goto done;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(items);
    if (PySequence_Fast_GET_SIZE(numbers) != n) {
        PyErr_SetString(PyExc_ValueError, "plain_texts: a number an item");
        goto done;
    }
    PyObject **item_of = PySequence_Fast_ITEMS(items), **number_of = PySequence_Fast_ITEMS(numbers);
    /* Which lines are plain first, so that both lists are made at their size. */
    char *plain_at = PyMem_Malloc(n ? (size_t)n : 1);
    if (plain_at == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t plain_count = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = item_of[i], *number = number_of[i];
        int plain = Py_IS_TYPE(item, fields.type) && PyUnicode_Check(number) &&
                    PyUnicode_GET_LENGTH(number) > 0;
        for (int k = F_OVERRIDES; plain && k < FIELDS; k++) {
            PyObject *value = FIELD(item, &fields, k);
            if (value == NULL) {
                PyMem_Free(plain_at);
                result = Py_NewRef(Py_None);
                goto done;
            }
            plain = value == Py_None;
        }
        if (plain && FIELD(item, &fields, F_PARAMS) == NULL) {
            PyMem_Free(plain_at);
            result = Py_NewRef(Py_None);
            goto done;
        }
        plain_at[i] = (char)plain;
        plain_count += plain;
    }
    specials = PyList_New(n - plain_count);
    texts = PyList_New(plain_count);
    if (specials == NULL || texts == NULL) {
        PyMem_Free(plain_at);
        goto done;
    }
    Py_ssize_t special_at = 0, text_at = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!plain_at[i]) {
            PyObject *position = PyLong_FromSsize_t(i);
            if (position == NULL) {
                PyMem_Free(plain_at);
                goto done;
            }
            PyList_SET_ITEM(specials, special_at++, position);
            continue;
        }
        PyObject *params = FIELD(item_of[i], &fields, F_PARAMS);
        PyObject *text = render_one(params, literal, index, slots, dumps);
        if (text == NULL) {
            if (!PyErr_Occurred()) {
                text = PyObject_CallOneArg(render, params);
            }
            if (text == NULL) {
                PyMem_Free(plain_at);
                goto done;
            }
        }
        PyList_SET_ITEM(texts, text_at++, text);
    }
    PyMem_Free(plain_at);
    result = PyTuple_Pack(2, specials, texts);
done:
    Py_XDECREF(specials);
    Py_XDECREF(texts);
    Py_XDECREF(numbers);
    Py_DECREF(items);
    return result;
}

PyDoc_STRVAR(plain_entries_doc,
"plain_entries(entry_type, items, numbers, specials, counts, texts, type, descriptors)\n"
"    -> list\n\n"
"Preparer._columns' second half: an Entry (a tuple of entry_type, 9 items) for each\n"
"plain item (those not at `specials`, ascending): its line, number, params and ref,\n"
"the segments and encoding of its count (a SegmentCount: items 2 and 0), its text\n"
"from `texts` or None where texts is None, and two zeros.");

static PyObject *
plain_entries(PyObject *self, PyObject *args)
{
    PyObject *entry_type, *items_obj, *numbers_obj, *specials_obj, *counts_obj, *texts_obj,
        *type, *descriptors;
    Fields fields;
    if (!PyArg_ParseTuple(args, "O!OOOOOOO!:plain_entries", &PyType_Type, &entry_type,
                          &items_obj, &numbers_obj, &specials_obj, &counts_obj, &texts_obj,
                          &type, &PyTuple_Type, &descriptors) ||
        fields_of(type, descriptors, &fields) < 0) {
        return NULL;
    }
    PyTypeObject *entry = (PyTypeObject *)entry_type;
    if (!PyType_IsSubtype(entry, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "plain_entries: entry_type is a tuple type");
        return NULL;
    }
    PyObject *items = NULL, *numbers = NULL, *specials = NULL, *counts = NULL, *texts = NULL,
             *result = NULL, *zero = NULL;
    if ((items = PySequence_Fast(items_obj, "plain_entries: items")) == NULL ||
        (numbers = PySequence_Fast(numbers_obj, "plain_entries: numbers")) == NULL ||
        (specials = PySequence_Fast(specials_obj, "plain_entries: specials")) == NULL ||
        (counts = PySequence_Fast(counts_obj, "plain_entries: counts")) == NULL ||
        (texts_obj != Py_None &&
         (texts = PySequence_Fast(texts_obj, "plain_entries: texts")) == NULL) ||
        (zero = PyLong_FromLong(0)) == NULL) {
        goto done;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(items), special_count = PySequence_Fast_GET_SIZE(specials),
               plain = n - special_count;
    if (PySequence_Fast_GET_SIZE(numbers) != n || PySequence_Fast_GET_SIZE(counts) != plain ||
        (texts != NULL && PySequence_Fast_GET_SIZE(texts) != plain)) {
        PyErr_SetString(PyExc_ValueError, "plain_entries: a number an item, a count a plain one");
        goto done;
    }
    PyObject **item_of = PySequence_Fast_ITEMS(items), **number_of = PySequence_Fast_ITEMS(numbers),
             **special_of = PySequence_Fast_ITEMS(specials), **count_of = PySequence_Fast_ITEMS(counts),
             **text_of = texts != NULL ? PySequence_Fast_ITEMS(texts) : NULL;
    result = PyList_New(plain);
    if (result == NULL) {
        goto done;
    }
    Py_ssize_t last = -1;
    for (Py_ssize_t s = 0; s < special_count; s++) {
        Py_ssize_t position = PyLong_AsSsize_t(special_of[s]);
        if (position <= last || position >= n) {
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_ValueError, "plain_entries: specials ascending, within items");
            }
            Py_CLEAR(result);
            goto done;
        }
        last = position;
    }
    Py_ssize_t next = 0, skip = special_count ? PyLong_AsSsize_t(special_of[0]) : -1, j = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (i == skip) {
            next++;
            skip = next < special_count ? PyLong_AsSsize_t(special_of[next]) : -1;
            continue;
        }
        PyObject *item = item_of[i], *count = count_of[j];
        if (!Py_IS_TYPE(item, fields.type) || !PyTuple_Check(count) || PyTuple_GET_SIZE(count) < 3) {
            PyErr_SetString(PyExc_TypeError, "plain_entries: a record and a SegmentCount");
            Py_CLEAR(result);
            goto done;
        }
        PyObject *value[9] = {
            FIELD(item, &fields, F_LINE), number_of[i], FIELD(item, &fields, F_PARAMS),
            FIELD(item, &fields, F_REF), PyTuple_GET_ITEM(count, 2), PyTuple_GET_ITEM(count, 0),
            text_of != NULL ? text_of[j] : Py_None, zero, zero};
        PyObject *one = entry->tp_alloc(entry, 9);
        if (one == NULL) {
            Py_CLEAR(result);
            goto done;
        }
        for (int k = 0; k < 9; k++) {
            if (value[k] == NULL) {
                Py_DECREF(one);
                PyErr_SetString(PyExc_AttributeError, "plain_entries: a record's field is unset");
                Py_CLEAR(result);
                goto done;
            }
            PyTuple_SET_ITEM(one, k, Py_NewRef(value[k]));
        }
        PyList_SET_ITEM(result, j++, one);
    }
done:
    Py_XDECREF(items);
    Py_XDECREF(numbers);
    Py_XDECREF(specials);
    Py_XDECREF(counts);
    Py_XDECREF(texts);
    Py_XDECREF(zero);
    return result;
}

/* ---- a chunk's lines decoded (dispatcher.reader.parse_lines) ------------------------- */

static PyObject *plain_record(const char *bytes, Py_ssize_t size, const Fields *fields,
                              PyObject *number);

/* What reads the lines of a chunk: the decoder (msgspec's), the exceptions its failure
 * raises, the careful path, when to skip the decoder, the record's type. */
typedef struct {
    PyObject *decode, *failed, *careful;
    Py_ssize_t most_misses, skip_after, misses, skip, longest;
    Fields fields;
} Lines;

static int
lines_of(PyObject *args, const char *format, PyObject **input, Py_ssize_t *first_line, Lines *d)
{
    PyObject *type, *descriptors;
    d->misses = d->skip = 0;
    if (!PyArg_ParseTuple(args, format, input, first_line, &d->longest, &d->decode, &PyTuple_Type,
                          &d->failed, &d->careful, &d->most_misses, &d->skip_after, &type,
                          &PyTuple_Type, &descriptors)) {
        return -1;
    }
    return fields_of(type, descriptors, &d->fields);
}

/* The record of one non-empty line (its bytes; `line` its bytes object, or NULL to make
 * one only where it is needed): a new reference, Py_None for none (the careful path
 * gives none), NULL for an error. The usual line is read here (`plain_record`, cheap to
 * try even while the decoder is skipped), else by the decoder, else by the careful
 * path. */
static PyObject *
line_record(Lines *d, const char *bytes, Py_ssize_t size, PyObject *line, Py_ssize_t at)
{
    PyObject *number = PyLong_FromSsize_t(at), *record = NULL, *made = NULL;
    if (number == NULL) {
        return NULL;
    }
    record = plain_record(bytes, size, &d->fields, number);
    if (record != NULL || PyErr_Occurred()) {
        goto done;
    }
    if (line == NULL && (line = made = PyBytes_FromStringAndSize(bytes, size)) == NULL) {
        goto done;
    }
    if (d->skip) {
        d->skip--;
    }
    else {
        record = PyObject_CallOneArg(d->decode, line);
        if (record == NULL) {
            if (!PyErr_ExceptionMatches(d->failed)) {
                goto done;
            }
            PyErr_Clear();
            if (++d->misses == d->most_misses) {
                d->misses = 0;
                d->skip = d->skip_after;
            }
        }
        else {
            d->misses = 0;
            if (Py_IS_TYPE(record, d->fields.type)) {
                Py_SETREF(*(PyObject **)((char *)record + d->fields.offset[F_LINE]),
                          Py_NewRef(number));
            }
            else if (PyObject_SetAttrString(record, "line", number) < 0) {
                Py_CLEAR(record);
            }
            goto done;
        }
    }
    record = PyObject_CallFunctionObjArgs(d->careful, line, number, NULL);
done:
    Py_DECREF(number);
    Py_XDECREF(made);
    return record;
}

/* Appends a line's record (none for Py_None) to out at *kept; -1 for an error. */
static int
keep_record(PyObject *out, Py_ssize_t *kept, PyObject *record)
{
    if (record == NULL) {
        return -1;
    }
    if (record == Py_None) {
        Py_DECREF(record);
        return 0;
    }
    PyList_SET_ITEM(out, (*kept)++, record);
    return 0;
}

PyDoc_STRVAR(decode_lines_doc,
"decode_lines(lines, first_line, longest, decode, failed, careful, misses, skip, type,\n"
"             descriptors) -> list | None\n\n"
"dispatcher.reader.parse_lines' loop: a record a non-empty line, decode(line) with its\n"
"line number set in its slot, or careful(line, number) (a record or None) where decode\n"
"raises one of `failed` (a tuple of exception types), and for the `skip` lines after\n"
"`misses` such failures in a row. The usual line (plain_record) is read here first,\n"
"into the record decode would give. An empty line gives nothing. None (nothing done)\n"
"when a line is longer than `longest` bytes: the caller's careful loop then.");

static PyObject *
decode_lines(PyObject *self, PyObject *args)
{
    PyObject *lines_obj;
    Py_ssize_t first_line;
    Lines d;
    if (lines_of(args, "OnnOO!OnnOO!:decode_lines", &lines_obj, &first_line, &d) < 0) {
        return NULL;
    }
    PyObject *lines = PySequence_Fast(lines_obj, "decode_lines: a list of lines");
    if (lines == NULL) {
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(lines), kept = 0;
    PyObject **line_of = PySequence_Fast_ITEMS(lines);
    PyObject *out = NULL, *result = NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!PyBytes_Check(line_of[i])) {
            PyErr_SetString(PyExc_TypeError, "decode_lines: lines of bytes");
            goto done;
        }
        if (PyBytes_GET_SIZE(line_of[i]) > d.longest) {
            result = Py_NewRef(Py_None); /* a line too long: the careful loop's chunk */
            goto done;
        }
    }
    out = PyList_New(n);
    if (out == NULL) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *line = line_of[i];
        if (PyBytes_GET_SIZE(line) > 0 &&
            keep_record(out, &kept, line_record(&d, PyBytes_AS_STRING(line), PyBytes_GET_SIZE(line),
                                                line, first_line + i)) < 0) {
            goto done;
        }
    }
    if (PyList_SetSlice(out, kept, n, NULL) < 0) {
        goto done;
    }
    result = Py_NewRef(out);
done:
    Py_XDECREF(out);
    Py_DECREF(lines);
    return result;
}

PyDoc_STRVAR(decode_block_doc,
"decode_block(data, first_line, longest, decode, failed, careful, misses, skip, type,\n"
"             descriptors) -> (list | None, lines)\n\n"
"decode_lines of data.split(b'\\n')[:-1] (the complete lines; what follows the last\n"
"newline is the caller's), without a bytes object a line but for the lines that\n"
"decode or careful read: the records and how many lines there were. None for the\n"
"records (nothing done) when a line is longer than `longest` bytes.");

static PyObject *
decode_block(PyObject *self, PyObject *args)
{
    PyObject *data;
    Py_ssize_t first_line;
    Lines d;
    if (lines_of(args, "SnnOO!OnnOO!:decode_block", &data, &first_line, &d) < 0) {
        return NULL;
    }
    const char *start = PyBytes_AS_STRING(data), *end = start + PyBytes_GET_SIZE(data);
    /* the lines, and every line's length first, as parse_lines decides the chunk's path */
    Py_ssize_t n = 0;
    int too_long = 0;
    for (const char *at = start, *newline; (newline = memchr(at, '\n', (size_t)(end - at))) != NULL;
         at = newline + 1, n++) {
        too_long |= newline - at > d.longest;
    }
    if (too_long) {
        return Py_BuildValue("(On)", Py_None, n);
    }
    PyObject *out = PyList_New(n);
    if (out == NULL) {
        return NULL;
    }
    Py_ssize_t kept = 0, i = 0;
    for (const char *at = start, *newline; (newline = memchr(at, '\n', (size_t)(end - at))) != NULL;
         at = newline + 1, i++) {
        if (newline > at &&
            keep_record(out, &kept, line_record(&d, at, newline - at, NULL, first_line + i)) < 0) {
            Py_DECREF(out);
            return NULL;
        }
    }
    if (PyList_SetSlice(out, kept, n, NULL) < 0) {
        Py_DECREF(out);
        return NULL;
    }
    return Py_BuildValue("(Nn)", out, n);
}

/* ---- The gateway's answer to a batch (api.batch_answer) ---------------------------- */

/* A strict reader of one JSON document, enough to take the usual batch answer apart and
 * to step over anything else in it. Every function gives 0 when it read what it was
 * asked, and DOUBT (-1) when the document is not valid JSON, or is valid in a way this
 * reader does not decide (an exponent, a long number, deep nesting): the caller then
 * leaves the document to orjson and the Python code, which give the answer or the
 * error. A doubt never raises. */
#define DOUBT (-1)
#define DEEPEST 64

typedef struct {
    const unsigned char *at, *end;
} Json;

static inline void
json_space(Json *j)
{
    while (j->at < j->end && (*j->at == ' ' || *j->at == '\n' || *j->at == '\r' || *j->at == '\t')) {
        j->at++;
    }
}

static inline int
json_expect(Json *j, unsigned char c)
{
    json_space(j);
    if (j->at < j->end && *j->at == c) {
        j->at++;
        return 0;
    }
    return DOUBT;
}

/* The bytes from j->at that make one UTF-8 character beyond ASCII, strictly (no
 * overlong form, no surrogate, nothing past U+10FFFF, as orjson checks): their count,
 * or 0. */
static inline int
utf8_length(const unsigned char *c, const unsigned char *end)
{
    Py_ssize_t room = end - c;
    if (c[0] >= 0xC2 && c[0] <= 0xDF) {
        return room >= 2 && (c[1] & 0xC0) == 0x80 ? 2 : 0;
    }
    if (c[0] >= 0xE0 && c[0] <= 0xEF) {
        if (room < 3 || (c[1] & 0xC0) != 0x80 || (c[2] & 0xC0) != 0x80) {
            return 0;
        }
        if ((c[0] == 0xE0 && c[1] < 0xA0) || (c[0] == 0xED && c[1] >= 0xA0)) {
            return 0; /* overlong, or a surrogate */
        }
        return 3;
    }
    if (c[0] >= 0xF0 && c[0] <= 0xF4) {
        if (room < 4 || (c[1] & 0xC0) != 0x80 || (c[2] & 0xC0) != 0x80 || (c[3] & 0xC0) != 0x80) {
            return 0;
        }
        if ((c[0] == 0xF0 && c[1] < 0x90) || (c[0] == 0xF4 && c[1] >= 0x90)) {
            return 0; /* overlong, or beyond U+10FFFF */
        }
        return 4;
    }
    return 0;
}

/* The value of four hex digits, or -1. */
static inline int
hex4(const unsigned char *c)
{
    int value = 0;
    for (int k = 0; k < 4; k++) {
        unsigned char d = c[k];
        int digit = d >= '0' && d <= '9'                     ? d - '0'
                    : (d | 0x20) >= 'a' && (d | 0x20) <= 'f' ? (d | 0x20) - 'a' + 10
                                                             : -1;
        if (digit < 0) {
            return -1;
        }
        value = value * 16 + digit;
    }
    return value;
}

/* How a string is written: 0 (ASCII with no escape: its bytes are its characters), or
 * these flags. */
#define ESCAPED 1
#define WIDE 2 /* UTF-8 beyond ASCII, checked */

/* A string, from its opening quote to past its closing one: *start and *size its bytes
 * between the quotes, *form how they are written. */
static int
json_string(Json *j, const unsigned char **start, Py_ssize_t *size, int *form)
{
    json_space(j);
    if (j->at >= j->end || *j->at != '"') {
        return DOUBT;
    }
    const unsigned char *c = ++j->at, *end = j->end;
    int flags = 0;
    while (c < end && *c != '"') {
#if defined(__GNUC__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        /* eight plain bytes at a time (no quote, backslash, control byte or byte beyond
         * ASCII among them), then straight to the first that is not: the lowest byte
         * flagged is exact (a borrow only runs up from a flagged byte) */
        while (end - c >= 8) {
            uint64_t word;
            memcpy(&word, c, 8);
            const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
            uint64_t quote = word ^ (ones * '"'), backslash = word ^ (ones * '\\');
            uint64_t special = (((quote - ones) & ~quote) | ((backslash - ones) & ~backslash) |
                                (word - ones * 0x20) | word) &
                               highs;
            if (special) {
                c += __builtin_ctzll(special) >> 3;
                break;
            }
            c += 8;
        }
#endif
        if (c >= end || *c == '"') {
            break;
        }
        if (*c == '\\') {
            flags |= ESCAPED;
            if (c + 1 >= end) {
                return DOUBT;
            }
            if (c[1] == 'u') {
                int unit = end - c >= 6 ? hex4(c + 2) : -1;
                if (unit < 0 || (unit >= 0xDC00 && unit <= 0xDFFF)) {
                    return DOUBT; /* not an escape, or a low surrogate first (orjson refuses) */
                }
                if (unit >= 0xD800 && unit <= 0xDBFF) {
                    /* a high surrogate: only with a low one escaped right after it */
                    int low = end - c >= 12 && c[6] == '\\' && c[7] == 'u' ? hex4(c + 8) : -1;
                    if (low < 0xDC00 || low > 0xDFFF) {
                        return DOUBT;
                    }
                    c += 6;
                }
                c += 6;
                continue;
            }
            if (!strchr("\"\\/bfnrt", c[1]) || c[1] == 0) {
                return DOUBT;
            }
            c += 2;
        }
        else if (*c < 0x20) {
            return DOUBT;
        }
        else if (*c < 0x80) {
            c++;
        }
        else {
            int length = utf8_length(c, end);
            if (length == 0) {
                return DOUBT;
            }
            flags |= WIDE;
            c += length;
        }
    }
    if (c >= end) {
        return DOUBT;
    }
    *start = j->at;
    *size = c - j->at;
    *form = flags;
    j->at = c + 1;
    return 0;
}

/* A number by JSON's grammar; one with an exponent or of more than 100 characters is a
 * doubt (orjson refuses what overflows a double). */
static int
json_number(Json *j)
{
    const unsigned char *c = j->at, *end = j->end, *first = c;
    if (c < end && *c == '-') {
        c++;
    }
    if (c >= end || *c < '0' || *c > '9') {
        return DOUBT;
    }
    if (*c == '0') {
        c++;
    }
    else {
        while (c < end && *c >= '0' && *c <= '9') {
            c++;
        }
    }
    if (c < end && *c == '.') {
        c++;
        if (c >= end || *c < '0' || *c > '9') {
            return DOUBT;
        }
        while (c < end && *c >= '0' && *c <= '9') {
            c++;
        }
    }
    if ((c < end && (*c == 'e' || *c == 'E')) || c - first > 100) {
        return DOUBT;
    }
    j->at = c;
    return 0;
}

static int json_skip(Json *j, int depth);

/* The next member of an object being read, its '{' read: 1 with its key (*key, *size,
 * *form as json_string gives them) and its ':' read, 0 at the object's end (its '}'
 * read), DOUBT for anything else. *count is how many members were read before (the
 * first has no ','). */
static int
json_member(Json *j, Py_ssize_t *count, const unsigned char **key, Py_ssize_t *size, int *form)
{
    json_space(j);
    if (j->at >= j->end) {
        return DOUBT;
    }
    if (*j->at == '}') {
        j->at++;
        return 0;
    }
    if (*count > 0 && *j->at++ != ',') {
        return DOUBT;
    }
    (*count)++;
    return json_string(j, key, size, form) < 0 || json_expect(j, ':') < 0 ? DOUBT : 1;
}

/* The members of an object after its '{', each value stepped over. */
static int
json_skip_members(Json *j, int depth)
{
    const unsigned char *key;
    Py_ssize_t size, count = 0;
    int form, more;
    while ((more = json_member(j, &count, &key, &size, &form)) > 0) {
        if (json_skip(j, depth) < 0) {
            return DOUBT;
        }
    }
    return more;
}

/* Any one value, read and not kept. */
static int
json_skip(Json *j, int depth)
{
    const unsigned char *text;
    Py_ssize_t size;
    int form;
    json_space(j);
    if (j->at >= j->end || depth > DEEPEST) {
        return DOUBT;
    }
    switch (*j->at) {
    case '"':
        return json_string(j, &text, &size, &form);
    case '{':
        j->at++;
        return json_skip_members(j, depth + 1);
    case '[':
        j->at++;
        json_space(j);
        if (j->at < j->end && *j->at == ']') {
            j->at++;
            return 0;
        }
        for (;;) {
            if (json_skip(j, depth + 1) < 0) {
                return DOUBT;
            }
            json_space(j);
            if (j->at >= j->end) {
                return DOUBT;
            }
            if (*j->at++ == ']') {
                return 0;
            }
            if (j->at[-1] != ',') {
                return DOUBT;
            }
        }
    case 't':
    case 'f':
    case 'n': {
        const char *word = *j->at == 't' ? "true" : *j->at == 'f' ? "false" : "null";
        size_t length = strlen(word);
        if ((size_t)(j->end - j->at) < length || memcmp(j->at, word, length) != 0) {
            return DOUBT;
        }
        j->at += length;
        return 0;
    }
    default:
        return json_number(j);
    }
}

/* Whether the next value is the literal null (stepped over when it is). */
static int
json_null(Json *j)
{
    json_space(j);
    if (j->end - j->at >= 4 && memcmp(j->at, "null", 4) == 0) {
        j->at += 4;
        return 1;
    }
    return 0;
}

/* Whether the key read is `name`. */
#define KEY_IS(key, size, name) ((size) == sizeof(name) - 1 && memcmp((key), (name), (size)) == 0)

/* A plain string value: a new str, NULL with an error, or NULL and *doubt set. */
static PyObject *
json_plain_str(Json *j, int *doubt)
{
    const unsigned char *text;
    Py_ssize_t size;
    int form;
    if (json_string(j, &text, &size, &form) < 0 || form) {
        *doubt = 1;
        return NULL;
    }
    return ascii_text((const char *)text, size);
}

/* A plain string or null into *slot (None for null), in place of what it held: the last
 * of a key read twice, as orjson keeps. */
static int
json_str_or_null(Json *j, PyObject **slot, int *doubt)
{
    PyObject *value = json_null(j) ? Py_NewRef(Py_None) : json_plain_str(j, doubt);
    if (value == NULL) {
        return -1;
    }
    Py_XSETREF(*slot, value);
    return 0;
}

/* Whether a str is ASCII and holds exactly these bytes. */
static int
same_ascii(PyObject *text, const unsigned char *bytes, Py_ssize_t size)
{
    return PyUnicode_CheckExact(text) && PyUnicode_IS_ASCII(text) &&
           PyUnicode_GET_LENGTH(text) == size && memcmp(PyUnicode_DATA(text), bytes, (size_t)size) == 0;
}

/* data.ids' entries, after the '[': each {"id": str, "mobile": str, ...}; the ids
 * appended, and the mobiles appended to `mobiles`, or (`sent`, a list of the batch's
 * Entry tuples, the number at 1) each checked to be the number sent at its place. */
static int
answer_ids(Json *j, PyObject *ids, PyObject *mobiles, PyObject *sent, int *doubt)
{
    Py_ssize_t count = 0;
    const char *next = sent != NULL && PyBytes_Check(sent) ? PyBytes_AS_STRING(sent) : NULL;
    json_space(j);
    if (j->at < j->end && *j->at == ']') {
        j->at++;
        goto end;
    }
    for (;;) {
        PyObject *id = NULL, *mobile = NULL;
        const unsigned char *key, *number = NULL;
        Py_ssize_t size, number_size = 0, members = 0;
        int form, ok = 0, more;
        if (json_expect(j, '{') < 0) {
            *doubt = 1;
            return -1;
        }
        while ((more = json_member(j, &members, &key, &size, &form)) > 0) {
            if (form) {
                goto doubtful;
            }
            if (KEY_IS(key, size, "id")) {
                Py_XSETREF(id, json_plain_str(j, doubt)); /* a key twice: the last */
                if (id == NULL) {
                    goto failed;
                }
            }
            else if (KEY_IS(key, size, "mobile")) { /* a key twice: the last */
                if (json_string(j, &number, &number_size, &form) < 0 || form) {
                    goto doubtful;
                }
            }
            else if (json_skip(j, 2) < 0) {
                goto doubtful;
            }
        }
        if (more < 0 || id == NULL || number == NULL) {
            goto doubtful; /* no id, or no mobile: the careful loop's work */
        }
        if (sent != NULL && PyBytes_Check(sent)) {
            /* the packed numbers, each followed by '\n' (pack_batch) */
            const char *stop = PyBytes_AS_STRING(sent) + PyBytes_GET_SIZE(sent);
            const char *newline = next < stop ? memchr(next, '\n', (size_t)(stop - next)) : NULL;
            if (newline == NULL || newline - next != number_size ||
                memcmp(next, number, (size_t)number_size) != 0) {
                goto doubtful; /* not the number sent there: match_ids decides */
            }
            next = newline + 1;
        }
        else if (sent != NULL) {
            PyObject *entry = count < PyList_GET_SIZE(sent) ? PyList_GET_ITEM(sent, count) : NULL;
            if (entry == NULL || !PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) < 2 ||
                !same_ascii(PyTuple_GET_ITEM(entry, 1), number, number_size)) {
                goto doubtful; /* not the number sent there: match_ids decides */
            }
        }
        else if ((mobile = ascii_text((const char *)number, number_size)) == NULL) {
            goto failed;
        }
        ok = PyList_Append(ids, id) == 0 && (mobile == NULL || PyList_Append(mobiles, mobile) == 0);
        Py_DECREF(id);
        Py_XDECREF(mobile);
        if (!ok) {
            return -1;
        }
        count++;
        json_space(j);
        if (j->at >= j->end) {
            *doubt = 1;
            return -1;
        }
        if (*j->at++ == ']') {
            goto end;
        }
        if (j->at[-1] != ',') {
            *doubt = 1;
            return -1;
        }
        continue;
    doubtful:
        *doubt = 1;
    failed:
        Py_XDECREF(id);
        Py_XDECREF(mobile);
        return -1;
    }
end:
    if (sent != NULL && (PyBytes_Check(sent)
                             ? next != PyBytes_AS_STRING(sent) + PyBytes_GET_SIZE(sent)
                             : count != PyList_GET_SIZE(sent))) {
        *doubt = 1; /* fewer ids than numbers sent */
        return -1;
    }
    return 0;
}

/* The answer's data object, after its '{'. */
static int
answer_data(Json *j, PyObject *ids, PyObject *mobiles, PyObject *sent, PyObject **status,
            int *doubt)
{
    int seen_ids = 0, form, more;
    const unsigned char *key;
    Py_ssize_t size, count = 0;
    while ((more = json_member(j, &count, &key, &size, &form)) > 0) {
        if (form) {
            break;
        }
        if (KEY_IS(key, size, "ids")) {
            if (seen_ids++) {
                break;
            }
            if (!json_null(j)) {
                if (json_expect(j, '[') < 0) {
                    break;
                }
                if (answer_ids(j, ids, mobiles, sent, doubt) < 0) {
                    return -1;
                }
            }
        }
        else if (KEY_IS(key, size, "invalidNumber")) {
            /* only none refused (in each of them, if twice): the numbers refused are the
             * careful path's work */
            if (!json_null(j) && (json_expect(j, '[') < 0 || json_expect(j, ']') < 0)) {
                break;
            }
        }
        else if (KEY_IS(key, size, "status")) {
            if (json_str_or_null(j, status, doubt) < 0) {
                return -1;
            }
        }
        else if (json_skip(j, 1) < 0) {
            break;
        }
    }
    if (more == 0) {
        return 0;
    }
    *doubt = 1;
    return -1;
}

/* The answer's meta object, after its '{': its transactionId (a str, or None). */
static int
answer_meta(Json *j, PyObject **transaction, int *doubt)
{
    const unsigned char *key;
    Py_ssize_t size, count = 0;
    int form, more;
    while ((more = json_member(j, &count, &key, &size, &form)) > 0) {
        if (form) {
            break;
        }
        if (KEY_IS(key, size, "transactionId")) {
            if (json_str_or_null(j, transaction, doubt) < 0) {
                return -1;
            }
        }
        else if (json_skip(j, 1) < 0) {
            break;
        }
    }
    if (more == 0) {
        return 0;
    }
    *doubt = 1;
    return -1;
}

PyDoc_STRVAR(batch_answer_doc,
"batch_answer(payload, sent=None) -> (ids, mobiles, status, transaction) | None\n\n"
"dispatcher.api.parse_batch(check_answer(200, {}, payload)) for the usual answer, read\n"
"straight from its bytes: data.ids' entries each with an 'id' and a 'mobile' string,\n"
"none refused (data.invalidNumber absent, null or []), status and meta.transactionId\n"
"strings or null or absent; every string kept printable ASCII without escapes, and\n"
"data or ids or invalidNumber not given twice (for the rest, the last wins, as in\n"
"orjson). None for anything else, valid or not (orjson and the Python\n"
"code then decide): status and transaction are given as they are read (None when null\n"
"or absent; '' as ''), for the caller to default. With `sent` (the batch's entries,\n"
"their number at 1, or pack_batch's numbers: bytes, each number followed by '\\n'),\n"
"each mobile must be the number sent at its place, as many ids as numbers, and mobiles\n"
"is None.");

static PyObject *
batch_answer(PyObject *self, PyObject *args)
{
    PyObject *payload, *sent = Py_None;
    if (!PyArg_ParseTuple(args, "S|O:batch_answer", &payload, &sent)) {
        return NULL;
    }
    if (sent == Py_None) {
        sent = NULL;
    }
    else if (!PyList_Check(sent) && !PyBytes_Check(sent)) {
        PyErr_SetString(PyExc_TypeError,
                        "batch_answer: sent is a list of entries or the packed numbers");
        return NULL;
    }
    Json j = {(const unsigned char *)PyBytes_AS_STRING(payload),
              (const unsigned char *)PyBytes_AS_STRING(payload) + PyBytes_GET_SIZE(payload)};
    PyObject *ids = PyList_New(0), *mobiles = sent == NULL ? PyList_New(0) : Py_NewRef(Py_None),
             *status = NULL,
             *transaction = NULL, *result = NULL;
    int doubt = 0, seen_data = 0;
    const unsigned char *key;
    Py_ssize_t size, count = 0;
    int form, more;
    if (ids == NULL || mobiles == NULL) {
        goto done;
    }
    if (json_expect(&j, '{') < 0) {
        goto doubtful;
    }
    while ((more = json_member(&j, &count, &key, &size, &form)) > 0) {
        if (form) {
            goto doubtful;
        }
        if (KEY_IS(key, size, "data")) {
            if (seen_data++ || json_expect(&j, '{') < 0) {
                goto doubtful;
            }
            if (answer_data(&j, ids, mobiles, sent, &status, &doubt) < 0) {
                goto done;
            }
        }
        else if (KEY_IS(key, size, "meta")) {
            Py_CLEAR(transaction); /* meta twice: the last one's */
            json_space(&j);
            if (j.at < j.end && *j.at == '{') {
                j.at++;
                if (answer_meta(&j, &transaction, &doubt) < 0) {
                    goto done;
                }
            }
            else if (json_skip(&j, 1) < 0) { /* meta that is not an object: no transaction */
                goto doubtful;
            }
        }
        else if (json_skip(&j, 1) < 0) {
            goto doubtful;
        }
    }
    json_space(&j);
    if (more < 0 || j.at != j.end || !seen_data) {
        goto doubtful;
    }
    result = PyTuple_Pack(4, ids, mobiles, status ? status : Py_None,
                          transaction ? transaction : Py_None);
    goto done;
doubtful:
    doubt = 1;
done:
    if (doubt && result == NULL) { /* a doubt raises nothing: an error stays an error */
        result = Py_NewRef(Py_None);
    }
    Py_XDECREF(ids);
    Py_XDECREF(mobiles);
    Py_XDECREF(status);
    Py_XDECREF(transaction);
    return result;
}

/* ---- A plain input line straight into its record (the reader's decode_lines) -------- */

/* A str of UTF-8 that json_string checked (strict, beyond ASCII somewhere), made at
 * its size and kind in two passes: CPython's own decoder takes ~860 instructions for a
 * name such as "Nguyễn" (its ASCII fast path fails, then a writer that grows). The kind
 * follows from the lead bytes: a 4-byte character needs UCS-4, a 3-byte one or a 2-byte
 * one from U+0100 (lead 0xC4 on) UCS-2, else Latin-1. */
static PyObject *
utf8_text(const unsigned char *bytes, Py_ssize_t size)
{
    Py_ssize_t length = 0;
    Py_UCS4 widest = 0xFF;
    for (Py_ssize_t i = 0; i < size; length++) {
        unsigned char lead = bytes[i];
        i += lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
        if (lead >= 0xF0) {
            widest = 0x10FFFF;
        }
        else if (lead >= 0xC4 && widest < 0xFFFF) {
            widest = 0xFFFF;
        }
    }
    PyObject *text = PyUnicode_New(length, widest);
    if (text == NULL) {
        return NULL;
    }
    int kind = PyUnicode_KIND(text);
    void *data = PyUnicode_DATA(text);
    for (Py_ssize_t i = 0, at = 0; i < size; at++) {
        unsigned char lead = bytes[i];
        Py_UCS4 cp;
        if (lead < 0x80) {
            cp = lead;
            i += 1;
        }
        else if (lead < 0xE0) {
            cp = ((Py_UCS4)(lead & 0x1F) << 6) | (bytes[i + 1] & 0x3F);
            i += 2;
        }
        else if (lead < 0xF0) {
            cp = ((Py_UCS4)(lead & 0x0F) << 12) | ((Py_UCS4)(bytes[i + 1] & 0x3F) << 6) |
                 (bytes[i + 2] & 0x3F);
            i += 3;
        }
        else {
            cp = ((Py_UCS4)(lead & 0x07) << 18) | ((Py_UCS4)(bytes[i + 1] & 0x3F) << 12) |
                 ((Py_UCS4)(bytes[i + 2] & 0x3F) << 6) | (bytes[i + 3] & 0x3F);
            i += 4;
        }
        PyUnicode_WRITE(kind, data, at, cp);
    }
    return text;
}

/* A str value of a record's field: ASCII made at its size, UTF-8 (already checked)
 * decoded; NULL and *doubt for one with an escape (msgspec's work), NULL alone for an
 * error. */
static PyObject *
record_str(Json *j, int *doubt)
{
    const unsigned char *text;
    Py_ssize_t size;
    int form;
    if (json_string(j, &text, &size, &form) < 0 || (form & ESCAPED)) {
        *doubt = 1;
        return NULL;
    }
    return form == 0 ? ascii_text((const char *)text, size) : utf8_text(text, size);
}

/* A JSON number as msgspec reads it into a param (`models._Param`): an int of at most
 * 18 digits, or a float of at most 15 significant digits and no exponent, m / 10^k
 * (both exact as doubles, so the division rounds once, as a correct parse does); NULL
 * and *doubt for anything else (more digits, an exponent, a leading zero). */
static PyObject *
record_number(Json *j, int *doubt)
{
    const unsigned char *c = j->at, *end = j->end;
    int negative = c < end && *c == '-';
    c += negative;
    if (c >= end || *c < '0' || *c > '9' || (*c == '0' && c + 1 < end && c[1] >= '0' && c[1] <= '9')) {
        *doubt = 1;
        return NULL;
    }
    uint64_t mantissa = 0;
    int significant = 0, fraction = -1; /* digits after the point; -1: no point */
    for (; c < end; c++) {
        if (*c >= '0' && *c <= '9') {
            significant += mantissa != 0 || *c != '0';
            mantissa = mantissa * 10 + (uint64_t)(*c - '0');
            fraction += fraction >= 0;
            if (significant > 18) {
                *doubt = 1;
                return NULL;
            }
        }
        else if (*c == '.' && fraction < 0 && c + 1 < end && c[1] >= '0' && c[1] <= '9') {
            fraction = 0;
        }
        else {
            break;
        }
    }
    if (c < end && (*c == 'e' || *c == 'E' || *c == '.')) {
        *doubt = 1;
        return NULL;
    }
    j->at = c;
    if (fraction < 0) {
        long long value = (long long)mantissa; /* 18 digits: within 64 bits */
        return PyLong_FromLongLong(negative ? -value : value);
    }
    if (significant > 15 || fraction >= POWERS) {
        *doubt = 1;
        return NULL;
    }
    double value = (double)mantissa / POW10[fraction];
    return PyFloat_FromDouble(negative ? -value : value);
}

/* A scalar: a str, a number, true or false, or (where `null_ok`) null as None. */
static PyObject *
record_scalar(Json *j, int null_ok, int *doubt)
{
    json_space(j);
    if (j->at >= j->end) {
        *doubt = 1;
        return NULL;
    }
    switch (*j->at) {
    case '"':
        return record_str(j, doubt);
    case 't':
        if (j->end - j->at >= 4 && memcmp(j->at, "true", 4) == 0) {
            j->at += 4;
            return Py_NewRef(Py_True);
        }
        break;
    case 'f':
        if (j->end - j->at >= 5 && memcmp(j->at, "false", 5) == 0) {
            j->at += 5;
            return Py_NewRef(Py_False);
        }
        break;
    case 'n':
        if (null_ok && json_null(j)) {
            return Py_NewRef(Py_None);
        }
        break;
    default:
        return record_number(j, doubt);
    }
    *doubt = 1;
    return NULL;
}

/* The params' array, after its '[': a list of scalars. */
static PyObject *
record_params(Json *j, int *doubt)
{
    PyObject *params = PyList_New(0);
    if (params == NULL) {
        return NULL;
    }
    json_space(j);
    if (j->at < j->end && *j->at == ']') {
        j->at++;
        return params;
    }
    for (;;) {
        PyObject *value = record_scalar(j, 0, doubt);
        if (value == NULL || PyList_Append(params, value) < 0) {
            Py_XDECREF(value);
            Py_DECREF(params);
            return NULL;
        }
        Py_DECREF(value);
        json_space(j);
        if (j->at >= j->end || (*j->at != ',' && *j->at != ']')) {
            *doubt = 1;
            Py_DECREF(params);
            return NULL;
        }
        if (*j->at++ == ']') {
            return params;
        }
    }
}

/* The input keys of the record's fields after the line, in RECIPIENT_FIELDS' order. */
static const char *const RECORD_KEYS[FIELDS] = {
    NULL, "to", "params", "ref", "from", "text", "externalId", "clientId", "email"};

/* The field of an input key (its index in RECORD_KEYS), or FIELDS for another key. */
static int
record_key(const unsigned char *key, Py_ssize_t size)
{
    int k;
    switch (size) {
    case 2: k = F_TO; break;
    case 3: k = F_REF; break;
    case 4: k = key[0] == 'f' ? F_OVERRIDES : F_OVERRIDES + 1; break; /* from, text */
    case 5: k = F_OVERRIDES + 4; break;                              /* email */
    case 6: k = F_PARAMS; break;
    case 8: k = F_OVERRIDES + 3; break;  /* clientId */
    case 10: k = F_OVERRIDES + 2; break; /* externalId */
    default: return FIELDS;
    }
    return memcmp(key, RECORD_KEYS[k], (size_t)size) == 0 ? k : FIELDS;
}

/* A record of `fields`' type for a line that is one object of the usual fields, each
 * once, read here as msgspec reads it: "to" a str, "params" an array of str, int, float
 * or bool, "ref" one of those or null, the overrides a str or null; every str without
 * an escape, every number in `record_number`'s forms, nothing after the object but
 * space. A new reference; NULL and no error for any other line (msgspec decides: it
 * gives the same record, or fails and the careful path reads the line); NULL and an
 * error for an error. */
static PyObject *
plain_record(const char *bytes, Py_ssize_t size, const Fields *fields, PyObject *number)
{
    Json j = {(const unsigned char *)bytes, (const unsigned char *)bytes + size};
    PyObject *value[FIELDS] = {NULL};
    PyObject *record = NULL;
    int doubt = 0;
    const unsigned char *key;
    Py_ssize_t key_size, count = 0;
    int form, more;
    if (json_expect(&j, '{') < 0) {
        return NULL;
    }
    while ((more = json_member(&j, &count, &key, &key_size, &form)) > 0) {
        if (form) {
            goto doubtful;
        }
        int k = record_key(key, key_size);
        if (k == FIELDS || value[k] != NULL) {
            goto doubtful; /* another key ("line" among them), or one twice */
        }
        if (k == F_PARAMS) {
            if (json_expect(&j, '[') < 0) {
                goto doubtful;
            }
            value[k] = record_params(&j, &doubt);
        }
        else if (k == F_TO) {
            value[k] = record_str(&j, &doubt);
        }
        else if (k == F_REF) {
            value[k] = record_scalar(&j, 1, &doubt);
        }
        else if (json_null(&j)) {
            value[k] = Py_NewRef(Py_None);
        }
        else {
            value[k] = record_str(&j, &doubt);
        }
        if (value[k] == NULL) {
            goto done;
        }
    }
    json_space(&j);
    if (more < 0 || j.at != j.end || value[F_TO] == NULL) {
        goto doubtful;
    }
    if (value[F_PARAMS] == NULL && (value[F_PARAMS] = PyList_New(0)) == NULL) {
        goto done;
    }
    record = fields->type->tp_alloc(fields->type, 0);
    if (record == NULL) {
        goto done;
    }
    value[F_LINE] = Py_NewRef(number);
    for (int k = 0; k < FIELDS; k++) {
        *(PyObject **)((char *)record + fields->offset[k]) = value[k] != NULL ? value[k] : Py_NewRef(Py_None);
        value[k] = NULL;
    }
    goto done;
doubtful:
    doubt = 1;
done:
    for (int k = 0; k < FIELDS; k++) {
        Py_XDECREF(value[k]);
    }
    return record; /* NULL: a doubt, or an error if one is set */
}


PyDoc_STRVAR(take_at_doc,
"take_at(keys, lines, first, out) -> bool\n\n"
"Write into out (8-byte items, one a line) keys[line - first] for each of lines (int64):\n"
"the keys of a chunk's items at their line numbers (dispatcher.dedupe.ChunkNumbers.keys_at).\n"
"False (out not all written) when a line is outside the keys.");

static PyObject *
take_at(PyObject *self, PyObject *args)
{
    PyObject *keys_obj, *lines_obj, *out_obj;
    long long first;
    if (!PyArg_ParseTuple(args, "OOLO:take_at", &keys_obj, &lines_obj, &first, &out_obj)) {
        return NULL;
    }
    Py_buffer keys = {0}, lines = {0}, out = {0};
    PyObject *result = NULL;
    if (get_buffer(keys_obj, &keys, 8, 0, "take_at keys") < 0 ||
        get_buffer(lines_obj, &lines, 8, 0, "take_at lines") < 0 ||
        get_buffer(out_obj, &out, 8, 1, "take_at out") < 0) {
        goto done;
    }
    Py_ssize_t n = COUNT(lines), size = COUNT(keys);
    if (COUNT(out) != n) {
        PyErr_SetString(PyExc_ValueError, "take_at: out, one item a line");
        goto done;
    }
    const uint64_t *key = keys.buf;
    const int64_t *line = lines.buf;
    uint64_t *dst = out.buf;
    int inside = 1;
    for (Py_ssize_t i = 0; i < n && inside; i++) {
        long long at = (long long)line[i] - first;
        inside = at >= 0 && at < size;
        dst[i] = inside ? key[at] : 0;
    }
    result = PyBool_FromLong(inside);
done:
    if (keys.obj) PyBuffer_Release(&keys);
    if (lines.obj) PyBuffer_Release(&lines);
    if (out.obj) PyBuffer_Release(&out);
    return result;
}

/* ---- an opt-out list's set of keys, without numpy ------------------------------------- */

/* Keys sorted in place by radix with a spare array up to this many (32 MiB of spare);
 * beyond, in place with none (flag_sort): the load's peak memory at 10 M numbers
 * (dispatcher.suppress's ROWS_MERGED, for the same reason). */
#define RADIX_WITH_SPARE (1 << 22)

/* Sort n keys in place by their bytes from `shift` down, most significant first
 * (American flag sort: each byte's buckets permuted in place by cycles, then each
 * bucket sorted on the next byte); short buckets by insertion. No memory beyond the
 * stack: for a list too big to sort with a spare copy. */
static void
flag_sort(uint64_t *a, Py_ssize_t n, int shift)
{
    if (n <= 32) {
        for (Py_ssize_t i = 1; i < n; i++) {
            uint64_t v = a[i];
            Py_ssize_t j = i;
            for (; j > 0 && a[j - 1] > v; j--) {
                a[j] = a[j - 1];
            }
            a[j] = v;
        }
        return;
    }
    Py_ssize_t count[256] = {0}, next[256], end[256], sum = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        count[(a[i] >> shift) & 255]++;
    }
    for (int b = 0; b < 256; b++) {
        next[b] = sum;
        sum += count[b];
        end[b] = sum;
    }
    for (int b = 0; b < 256; b++) {
        while (next[b] < end[b]) {
            uint64_t v = a[next[b]];
            int d = (int)((v >> shift) & 255);
            while (d != b) { /* v goes to its bucket; what was there is carried on */
                uint64_t there = a[next[d]];
                a[next[d]++] = v;
                v = there;
                d = (int)((v >> shift) & 255);
            }
            a[next[b]++] = v;
        }
    }
    if (shift == 0) {
        return;
    }
    Py_ssize_t start = 0;
    for (int b = 0; b < 256; b++) {
        if (count[b] > 1) {
            flag_sort(a + start, count[b], shift - 8);
        }
        start += count[b];
    }
}

PyDoc_STRVAR(sorted_distinct_doc,
"sorted_distinct(keys, spare_limit=2**22) -> int\n\n"
"Sort keys (uint64) in place, ascending, and move the distinct ones to the front:\n"
"their count (dispatcher.suppress._sorted_distinct). Keys already in order are not\n"
"sorted; up to spare_limit keys are sorted by radix (as many bytes again while it\n"
"runs), more in place (no memory beyond the keys).");

static PyObject *
sorted_distinct(PyObject *self, PyObject *args)
{
    PyObject *keys_obj;
    Py_ssize_t spare_limit = RADIX_WITH_SPARE;
    if (!PyArg_ParseTuple(args, "O|n:sorted_distinct", &keys_obj, &spare_limit)) {
        return NULL;
    }
    Py_buffer keys;
    if (get_buffer(keys_obj, &keys, 8, 1, "sorted_distinct keys") < 0) {
        return NULL;
    }
    Py_ssize_t n = COUNT(keys), kept = n;
    uint64_t *a = keys.buf;
    PyObject *result = NULL;
    if (n >= 2) {
        int sorted = 1;
        uint64_t low = a[0], high = a[0];
        for (Py_ssize_t i = 1; i < n; i++) {
            sorted &= a[i - 1] <= a[i];
            low &= a[i];
            high |= a[i];
        }
        if (!sorted) {
            if (n > spare_limit || radix_sort(a, n) < 0) {
                PyErr_Clear(); /* no room for the spare: in place */
                uint64_t differ = low ^ high; /* not 0: the keys are not all equal */
                int top = 63;
                while (!((differ >> top) & 1)) {
                    top--;
                }
                flag_sort(a, n, top & ~7);
            }
        }
        kept = 1;
        for (Py_ssize_t i = 1; i < n; i++) {
            if (a[i] != a[kept - 1]) {
                a[kept++] = a[i];
            }
        }
    }
    result = PyLong_FromSsize_t(kept);
    PyBuffer_Release(&keys);
    return result;
}

PyDoc_STRVAR(valid_keys_doc,
"valid_keys(keys, table, min_digits, max_digits, out)\n\n"
"dispatcher.suppress._international: out[i] (one byte a key) is table[digit count *\n"
"1000 + first three digits] of keys[i], 0 for a key of fewer than min_digits or more\n"
"than max_digits digits.");

static PyObject *
valid_keys(PyObject *self, PyObject *args)
{
    PyObject *keys_obj, *out_obj;
    Py_buffer table = {0}, keys = {0}, out = {0};
    int min_digits, max_digits;
    if (!PyArg_ParseTuple(args, "Oy*iiO:valid_keys", &keys_obj, &table, &min_digits,
                          &max_digits, &out_obj)) {
        return NULL;
    }
    PyObject *result = NULL;
    if (get_buffer(keys_obj, &keys, 8, 0, "valid_keys keys") < 0 ||
        get_buffer(out_obj, &out, 1, 1, "valid_keys out") < 0) {
        goto done;
    }
    if (min_digits < 3 || max_digits > 19 || min_digits > max_digits ||
        table.len < (Py_ssize_t)(max_digits + 1) * 1000 || COUNT(out) != COUNT(keys)) {
        PyErr_SetString(PyExc_ValueError, "valid_keys: a table of (max_digits + 1) * 1000");
        goto done;
    }
    const uint64_t *key = keys.buf;
    const unsigned char *country = table.buf;
    uint8_t *ok = out.buf;
    for (Py_ssize_t i = 0; i < COUNT(keys); i++) {
        int digits = 1;
        while (digits < 20 && key[i] >= POWER10[digits]) {
            digits++;
        }
        ok[i] = digits >= min_digits && digits <= max_digits &&
                country[digits * 1000 + (Py_ssize_t)(key[i] / POWER10[digits - 3])] != 0;
    }
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&table);
    if (keys.obj) PyBuffer_Release(&keys);
    if (out.obj) PyBuffer_Release(&out);
    return result;
}

/* dispatcher.suppress.SuppressionList's keys, held here: the sorted keys (a buffer of
 * the caller's, kept exported), every BLOCK-th of them, and a filter of 16 bits a key,
 * as dispatcher.sorted_keys' SortedKeys and KeyFilter(2 * size) hold them. */
typedef struct {
    PyObject_HEAD
    Py_buffer table;
    Py_ssize_t size, blocks;
    uint64_t *index;
    uint64_t *words;
    uint64_t nwords;
} KeySet;

static PyObject *
KeySet_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *keys_obj;
    static char *names[] = {"keys", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O:KeySet", names, &keys_obj)) {
        return NULL;
    }
    KeySet *self = (KeySet *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    if (get_buffer(keys_obj, &self->table, 8, 0, "KeySet keys") < 0) {
        Py_DECREF(self);
        return NULL;
    }
    const uint64_t *key = self->table.buf;
    Py_ssize_t size = COUNT(self->table);
    for (Py_ssize_t i = 1; i < size; i++) {
        if (key[i - 1] >= key[i]) {
            PyErr_SetString(PyExc_ValueError, "KeySet: keys ascending, each once");
            Py_DECREF(self);
            return NULL;
        }
    }
    self->size = size;
    self->blocks = (size + BLOCK - 1) / BLOCK;
    uint64_t nwords = (uint64_t)(2 * size + 7) / 8;
    self->nwords = nwords < 64 ? 64 : nwords;
    self->index = PyMem_RawMalloc((size_t)(self->blocks ? self->blocks : 1) * sizeof(uint64_t));
    self->words = PyMem_RawCalloc((size_t)self->nwords, sizeof(uint64_t));
    if (self->index == NULL || self->words == NULL || self->nwords > UINT32_MAX) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t b = 0; b < self->blocks; b++) {
        self->index[b] = key[b * BLOCK];
    }
    add_pairs(self->words, self->nwords, key, NULL, size);
    return (PyObject *)self;
}

static void
KeySet_dealloc(KeySet *self)
{
    if (self->table.obj) PyBuffer_Release(&self->table);
    PyMem_RawFree(self->index);
    PyMem_RawFree(self->words);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

PyDoc_STRVAR(KeySet_listed_doc,
"listed(keys) -> list[int]\n\n"
"The positions of the keys (uint64) that are in the set, ascending: the filter rules\n"
"most out, the others are looked up through the index.");

static PyObject *
KeySet_listed(KeySet *self, PyObject *arg)
{
    Py_buffer keys;
    if (get_buffer(arg, &keys, 8, 0, "listed keys") < 0) {
        return NULL;
    }
    Py_ssize_t n = COUNT(keys);
    const uint64_t *key = keys.buf, *table = self->table.buf;
    PyObject *result = NULL, *listed = PyList_New(0);
    int64_t *maybe = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(int64_t));
    if (listed == NULL || maybe == NULL) {
        if (maybe == NULL) PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t count = probe_pairs(self->words, self->nwords, key, NULL, n, maybe, 0);
    for (Py_ssize_t j = 0; j < count; j++) {
        uint64_t q = key[maybe[j]];
        Py_ssize_t at = first_at_least(table, self->size, self->index, self->blocks, q);
        if (at < self->size && table[at] == q) {
            PyObject *position = PyLong_FromLongLong(maybe[j]);
            if (position == NULL || PyList_Append(listed, position) < 0) {
                Py_XDECREF(position);
                goto done;
            }
            Py_DECREF(position);
        }
    }
    result = Py_NewRef(listed);
done:
    PyMem_Free(maybe);
    Py_XDECREF(listed);
    PyBuffer_Release(&keys);
    return result;
}

static PyObject *
KeySet_size(KeySet *self, void *closure)
{
    return PyLong_FromSsize_t(self->size);
}

static PyObject *
KeySet_nbytes(KeySet *self, void *closure)
{
    return PyLong_FromSsize_t(self->table.len + self->blocks * 8 + (Py_ssize_t)self->nwords * 8);
}

static PyObject *
KeySet_keys(KeySet *self, void *closure)
{
    return Py_NewRef(self->table.obj);
}

static PyGetSetDef KeySet_getset[] = {
    {"size", (getter)KeySet_size, NULL, "keys in the set", NULL},
    {"keys", (getter)KeySet_keys, NULL, "the keys' object, as given", NULL},
    {"nbytes", (getter)KeySet_nbytes, NULL, "bytes of the keys, the index and the filter", NULL},
    {NULL},
};

static PyMethodDef KeySet_methods[] = {
    {"listed", (PyCFunction)KeySet_listed, METH_O, KeySet_listed_doc},
    {NULL},
};

PyDoc_STRVAR(KeySet_doc,
"KeySet(keys)\n\n"
"A set of uint64 keys (ascending, each once; the buffer is held, not copied), asked a\n"
"chunk at a time: dispatcher.sorted_keys' SortedKeys and KeyFilter, in C.");

static PyTypeObject KeySetType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "dispatcher._native.KeySet",
    .tp_basicsize = sizeof(KeySet),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = KeySet_doc,
    .tp_new = KeySet_new,
    .tp_dealloc = (destructor)KeySet_dealloc,
    .tp_methods = KeySet_methods,
    .tp_getset = KeySet_getset,
};

PyDoc_STRVAR(empty_doc,
"empty(size) -> bytearray\n\n"
"A bytearray of size bytes, not zeroed (bytearray(size) zeroes them): room for a C\n"
"function to write every byte of (dispatcher.keys.empty).");

static PyObject *
empty(PyObject *self, PyObject *arg)
{
    Py_ssize_t size = PyLong_AsSsize_t(arg);
    if (size < 0) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_ValueError, "empty: a size >= 0");
        }
        return NULL;
    }
    return PyByteArray_FromStringAndSize(NULL, size);
}

/* ---- the packed duplicate record, held in C ------------------------------------------- */

/* dispatcher.dedupe_runs.Runs without numpy: the same sorted runs behind the same
 * filter, each run's columns malloc'd here, a chunk checked in one call. The constants
 * are that module's (FANOUT, MIN_FILTER, TRIM_FROM, MAX_LINE). dispatcher.heap's
 * thresholds are set by the caller (NativeRecord); a big merge trims the heap here, as
 * dispatcher.heap.release does after the numpy record's. */

#define RECORD_FANOUT 4
#define RECORD_RUNS 128 /* FANOUT - 1 a level over 40 levels, and the one being added */
#define RECORD_MIN_FILTER (1 << 20)
#define RECORD_TRIM_FROM (1 << 16)
#define RECORD_MAX_LINE UINT32_MAX
/* A group of equal keys at least this long is sorted by hash with qsort, not by insertion. */
#define INSERTION_GROUP 16

#if defined(__GLIBC__)
#include <malloc.h>
#endif

typedef struct {
    uint64_t *keys;   /* size sorted keys, then BLOCK times NO_KEY */
    uint64_t *index;  /* every BLOCK-th key (first_at_least's) */
    uint64_t *hashes; /* NULL: keys alone */
    uint32_t *lines;
    Py_ssize_t size;
    int level; /* how many merges of FANOUT made it */
} KeyRun;

typedef struct {
    PyObject_HEAD
    int texts;
    int broken; /* an allocation failed halfway through a merge: entries are lost */
    int count;
    Py_ssize_t size;
    uint64_t *words; /* the filter (NULL before the first run) */
    uint64_t nwords;
    Py_ssize_t capacity;
    Py_ssize_t min_filter; /* the filter's least capacity (Runs' MIN_FILTER) */
    Py_ssize_t fixed_words; /* > 0: a filter of this many words that never grows */
    KeyRun runs[RECORD_RUNS];
} Record;

static void
run_free(KeyRun *run)
{
    PyMem_RawFree(run->keys);
    PyMem_RawFree(run->index);
    PyMem_RawFree(run->hashes);
    PyMem_RawFree(run->lines);
    memset(run, 0, sizeof(*run));
}

/* A table for size sorted keys, its padding set; NULL when out of memory. */
static uint64_t *
keys_table(Py_ssize_t size)
{
    uint64_t *table = PyMem_RawMalloc((size_t)(size + BLOCK) * sizeof(uint64_t));
    if (table != NULL) {
        for (Py_ssize_t i = size; i < size + BLOCK; i++) {
            table[i] = NO_KEY;
        }
    }
    return table;
}

/* The run's index from its keys: 0, or -1 when out of memory. */
static int
run_index(KeyRun *run)
{
    Py_ssize_t blocks = (run->size + BLOCK - 1) / BLOCK;
    run->index = PyMem_RawMalloc((size_t)(blocks ? blocks : 1) * sizeof(uint64_t));
    if (run->index == NULL) {
        return -1;
    }
    for (Py_ssize_t b = 0; b < blocks; b++) {
        run->index[b] = run->keys[b * BLOCK];
    }
    return 0;
}

static Py_ssize_t
run_bytes(const KeyRun *run, int texts)
{
    Py_ssize_t blocks = (run->size + BLOCK - 1) / BLOCK;
    return (run->size + BLOCK) * 8 + blocks * 8 + run->size * 4 + (texts ? run->size * 8 : 0);
}

/* The line of (q, hq) in the run, or -1. */
static inline int64_t
run_line(const KeyRun *run, uint64_t q, const uint64_t *hq)
{
    Py_ssize_t size = run->size;
    const uint64_t *sorted = run->keys;
    Py_ssize_t at = first_at_least(sorted, size, run->index, (size + BLOCK - 1) / BLOCK, q);
    for (; at < size && sorted[at] == q; at++) {
        if (hq == NULL || run->hashes[at] == *hq) {
            return run->lines[at];
        }
    }
    return -1;
}

/* The last FANOUT runs merged into one of the next level (dedupe_runs._Run.merge): each
 * column of the old runs is freed as soon as its merged copy exists. 0, or -1 with
 * MemoryError set (the record is broken then if anything was freed). */
static int
record_merge(Record *self)
{
    KeyRun *old = &self->runs[self->count - RECORD_FANOUT];
    KeyRun merged = {0};
    Py_ssize_t size = 0;
    for (int r = 0; r < RECORD_FANOUT; r++) {
        size += old[r].size;
    }
    merged.size = size;
    merged.level = old[RECORD_FANOUT - 1].level + 1;
    uint8_t *source = PyMem_RawMalloc((size_t)(size ? size : 1));
    merged.keys = keys_table(size);
    if (source == NULL || merged.keys == NULL) {
        goto fail; /* nothing freed yet: the record is whole */
    }
    const uint64_t *at[MAX_RUNS], *end[MAX_RUNS];
    const char *column[MAX_RUNS];
    for (int r = 0; r < RECORD_FANOUT; r++) {
        at[r] = old[r].keys;
        end[r] = old[r].keys + old[r].size;
    }
    merge_runs(at, end, RECORD_FANOUT, merged.keys, source);
    self->broken = 1; /* until the merged run is whole */
    for (int r = 0; r < RECORD_FANOUT; r++) {
        PyMem_RawFree(old[r].keys);
        PyMem_RawFree(old[r].index);
        old[r].keys = old[r].index = NULL;
    }
    if (self->texts) {
        merged.hashes = PyMem_RawMalloc((size_t)(size ? size : 1) * sizeof(uint64_t));
        if (merged.hashes == NULL) {
            goto fail;
        }
        for (int r = 0; r < RECORD_FANOUT; r++) {
            column[r] = (const char *)old[r].hashes;
        }
        gather_columns(column, source, size, merged.hashes, 8);
        for (int r = 0; r < RECORD_FANOUT; r++) {
            PyMem_RawFree(old[r].hashes);
            old[r].hashes = NULL;
        }
    }
    merged.lines = PyMem_RawMalloc((size_t)(size ? size : 1) * sizeof(uint32_t));
    if (merged.lines == NULL) {
        goto fail;
    }
    for (int r = 0; r < RECORD_FANOUT; r++) {
        column[r] = (const char *)old[r].lines;
    }
    gather_columns(column, source, size, merged.lines, 4);
    PyMem_RawFree(source);
    source = NULL;
    if (run_index(&merged) < 0) {
        goto fail;
    }
    for (int r = 0; r < RECORD_FANOUT; r++) {
        run_free(&old[r]);
    }
    self->count -= RECORD_FANOUT - 1;
    self->runs[self->count - 1] = merged;
    self->broken = 0;
#if defined(__GLIBC__)
    if (size >= RECORD_TRIM_FROM) {
        malloc_trim(0); /* dispatcher.heap.release */
    }
#endif
    return 0;
fail:
    PyMem_RawFree(source);
    run_free(&merged);
    PyErr_NoMemory();
    return -1;
}

/* A filter of every recorded pair, with room for as many again (Runs._rebuild_filter). */
static int
record_rebuild_filter(Record *self)
{
    PyMem_RawFree(self->words); /* released before its successor is made */
    self->words = NULL;
    Py_ssize_t capacity = 2 * self->size > self->min_filter ? 2 * self->size : self->min_filter;
    uint64_t nwords = (uint64_t)(capacity + 7) / 8;
    if (nwords < 64) {
        nwords = 64;
    }
    if (self->fixed_words) {
        nwords = (uint64_t)self->fixed_words;
    }
    if (nwords > UINT32_MAX) {
        PyErr_SetString(PyExc_MemoryError, "the duplicate record's filter: too many entries");
        return -1;
    }
    self->words = PyMem_RawCalloc((size_t)nwords, sizeof(uint64_t));
    if (self->words == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->nwords = nwords;
    self->capacity = self->fixed_words ? PY_SSIZE_T_MAX : (Py_ssize_t)nwords * 8;
    for (int r = 0; r < self->count; r++) {
        const KeyRun *run = &self->runs[r];
        add_pairs(self->words, nwords, run->keys, run->hashes, run->size);
    }
    return 0;
}

/* Append a run at level 0 (taking its columns); FANOUT runs of one level merge into one
 * of the next (Runs._add). */
static int
record_add(Record *self, KeyRun *run)
{
    if (self->count == RECORD_RUNS) { /* 3 runs a level over 42 levels: never */
        run_free(run);
        PyErr_SetString(PyExc_MemoryError, "the duplicate record: too many runs");
        return -1;
    }
    self->runs[self->count++] = *run;
    self->size += run->size;
    memset(run, 0, sizeof(*run));
    while (self->count >= RECORD_FANOUT &&
           self->runs[self->count - RECORD_FANOUT].level == self->runs[self->count - 1].level) {
        if (record_merge(self) < 0) {
            return -1;
        }
    }
    return 0;
}

typedef struct {
    uint64_t hash;
    int64_t order;
} HashAt;

static int
hash_at_compare(const void *a, const void *b)
{
    const HashAt *x = a, *y = b;
    if (x->hash != y->hash) {
        return x->hash < y->hash ? -1 : 1;
    }
    return x->order < y->order ? -1 : (x->order > y->order);
}

/* A group of equal keys (its order ascending: the radix sort is stable) sorted by hash,
 * stably: as numpy.lexsort((hashes, keys)) orders it. 0, or -1 (MemoryError). */
static int
sort_group(uint64_t *hash, int64_t *order, Py_ssize_t count)
{
    if (count < INSERTION_GROUP) {
        for (Py_ssize_t i = 1; i < count; i++) {
            uint64_t h = hash[i];
            int64_t o = order[i];
            Py_ssize_t j = i;
            for (; j > 0 && hash[j - 1] > h; j--) {
                hash[j] = hash[j - 1];
                order[j] = order[j - 1];
            }
            hash[j] = h;
            order[j] = o;
        }
        return 0;
    }
    HashAt *pairs = PyMem_Malloc((size_t)count * sizeof(HashAt));
    if (pairs == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        pairs[i].hash = hash[i];
        pairs[i].order = order[i];
    }
    qsort(pairs, (size_t)count, sizeof(HashAt), hash_at_compare);
    for (Py_ssize_t i = 0; i < count; i++) {
        hash[i] = pairs[i].hash;
        order[i] = pairs[i].order;
    }
    PyMem_Free(pairs);
    return 0;
}

/* Whether sorted line i starts a group of equal pairs (its key, or its hash, differs
 * from the line before). */
static inline int
starts_group(const uint64_t *sk, const uint64_t *sh, int texts, Py_ssize_t i)
{
    return i == 0 || sk[i] != sk[i - 1] || (texts && sh[i] != sh[i - 1]);
}

/* Runs._check, over one chunk: ans[i] is -1 or the first line of line i's kind. */
static int
record_check(Record *self, const uint64_t *key, uint64_t code_bits, const uint64_t *code,
             const uint64_t *hash, const int64_t *line, Py_ssize_t n, int64_t *ans)
{
    int status = -1, texts = self->texts;
    /* k, sorted keys, sorted hashes, group keys, group hashes: 8 bytes each a line;
     * order, group lines, found, asked: 8 bytes each a line. */
    size_t words = (size_t)n * 9;
    uint64_t *work = PyMem_RawMalloc(words * sizeof(uint64_t));
    if (work == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    uint64_t *k = work, *sk = work + n, *sh = work + 2 * (size_t)n, *gk = work + 3 * (size_t)n,
             *gh = work + 4 * (size_t)n;
    int64_t *order = (int64_t *)(work + 5 * (size_t)n), *gl = (int64_t *)(work + 6 * (size_t)n),
            *found = (int64_t *)(work + 7 * (size_t)n), *asked = (int64_t *)(work + 8 * (size_t)n);
    for (Py_ssize_t i = 0; i < n; i++) {
        k[i] = key[i] | (code != NULL ? code[i] : code_bits);
    }
    if (radix_argsort(k, n, order, sk) < 0) {
        goto done;
    }
    if (texts) {
        for (Py_ssize_t i = 0; i < n; i++) {
            sh[i] = hash[order[i]];
        }
        /* Equal keys (a number twice in the chunk) are ordered by hash too. */
        for (Py_ssize_t i = 1; i < n; i++) {
            if (sk[i] != sk[i - 1]) {
                continue;
            }
            Py_ssize_t start = i - 1, stop = i + 1;
            while (stop < n && sk[stop] == sk[start]) {
                stop++;
            }
            if (sort_group(&sh[start], &order[start], stop - start) < 0) {
                goto done;
            }
            i = stop - 1;
        }
    }
    /* The groups of equal pairs, in sorted order; each starts with its earliest line. */
    Py_ssize_t groups = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (starts_group(sk, sh, texts, i)) {
            gk[groups] = sk[i];
            gh[groups] = texts ? sh[i] : 0;
            gl[groups] = line[order[i]];
            found[groups] = -1;
            groups++;
        }
    }
    if (self->words != NULL) {
        /* Only the groups the filter may have seen are looked up in the runs; each
         * group's pair goes into the filter as it is asked about. */
        Py_ssize_t count = probe_pairs(self->words, self->nwords, gk, texts ? gh : NULL,
                                       groups, asked, 1);
        for (Py_ssize_t j = 0; j < count; j++) {
            int64_t g = asked[j];
            for (int r = 0; r < self->count && found[g] < 0; r++) {
                found[g] = run_line(&self->runs[r], gk[g], texts ? &gh[g] : NULL);
            }
        }
    }
    Py_ssize_t g = -1, fresh = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        int start = starts_group(sk, sh, texts, i);
        if (start) {
            g++;
            fresh += found[g] < 0;
        }
        ans[order[i]] = found[g] >= 0 ? found[g] : (start ? -1 : gl[g]);
    }
    if (fresh) {
        KeyRun run = {0};
        run.size = fresh;
        run.keys = keys_table(fresh);
        run.hashes = texts ? PyMem_RawMalloc((size_t)fresh * sizeof(uint64_t)) : NULL;
        run.lines = PyMem_RawMalloc((size_t)fresh * sizeof(uint32_t));
        if (run.keys == NULL || run.lines == NULL || (texts && run.hashes == NULL)) {
            run_free(&run);
            PyErr_NoMemory();
            goto done;
        }
        Py_ssize_t at = 0;
        for (Py_ssize_t j = 0; j < groups; j++) {
            if (found[j] < 0) {
                run.keys[at] = gk[j];
                if (texts) {
                    run.hashes[at] = gh[j];
                }
                run.lines[at++] = (uint32_t)gl[j];
            }
        }
        if (run_index(&run) < 0) {
            run_free(&run);
            PyErr_NoMemory();
            goto done;
        }
        if (record_add(self, &run) < 0) {
            goto done;
        }
        if (self->words == NULL || self->size > self->capacity) {
            if (record_rebuild_filter(self) < 0) {
                goto done;
            }
        }
    }
    status = 0;
done:
    PyMem_RawFree(work);
    return status;
}

PyDoc_STRVAR(Record_check_doc,
"check(keys, codes, hashes, lines) -> (positions, firsts)\n\n"
"Check a chunk's lines against the record and record the new ones (dispatcher.dedupe_runs.\n"
"Runs.firsts): keys (uint64, the numbers' keys), codes (an int OR-ed into every key, or\n"
"uint64 one a line), hashes (uint64 one a line; None without texts), lines (int64, each\n"
"at most 2^32 - 1, else OverflowError and nothing recorded). Answers the positions of\n"
"the duplicates, ascending, and each one's first line (two lists).");

static PyObject *
Record_check(Record *self, PyObject *args)
{
    PyObject *keys_obj, *codes_obj, *hashes_obj, *lines_obj;
    if (!PyArg_ParseTuple(args, "OOOO:check", &keys_obj, &codes_obj, &hashes_obj, &lines_obj)) {
        return NULL;
    }
    if (self->broken) {
        PyErr_SetString(PyExc_MemoryError, "the duplicate record lost entries to a failed allocation");
        return NULL;
    }
    Py_buffer keys = {0}, codes = {0}, hashes = {0}, lines = {0};
    PyObject *result = NULL, *positions = NULL, *firsts = NULL;
    int64_t *ans = NULL;
    uint64_t code_bits = 0;
    if (get_buffer(keys_obj, &keys, 8, 0, "check keys") < 0 ||
        get_buffer(lines_obj, &lines, 8, 0, "check lines") < 0) {
        goto done;
    }
    Py_ssize_t n = COUNT(keys);
    if (COUNT(lines) != n) {
        PyErr_SetString(PyExc_ValueError, "check: one line a key");
        goto done;
    }
    if (PyLong_Check(codes_obj)) {
        code_bits = PyLong_AsUnsignedLongLong(codes_obj);
        if (PyErr_Occurred()) {
            goto done;
        }
    }
    else {
        if (get_buffer(codes_obj, &codes, 8, 0, "check codes") < 0) {
            goto done;
        }
        if (COUNT(codes) != n) {
            PyErr_SetString(PyExc_ValueError, "check: one code a key");
            goto done;
        }
    }
    if (self->texts) {
        if (hashes_obj == Py_None) {
            PyErr_SetString(PyExc_ValueError, "check: a record of texts needs the hashes");
            goto done;
        }
        if (get_buffer(hashes_obj, &hashes, 8, 0, "check hashes") < 0) {
            goto done;
        }
        if (COUNT(hashes) != n) {
            PyErr_SetString(PyExc_ValueError, "check: one hash a key");
            goto done;
        }
    }
    const int64_t *line = lines.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (line[i] < 0 || (uint64_t)line[i] > RECORD_MAX_LINE) {
            PyErr_SetString(PyExc_OverflowError, "check: a line beyond 2^32 - 1");
            goto done;
        }
    }
    positions = PyList_New(0);
    firsts = PyList_New(0);
    if (positions == NULL || firsts == NULL) {
        goto done;
    }
    if (n) {
        ans = PyMem_RawMalloc((size_t)n * sizeof(int64_t));
        if (ans == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        if (record_check(self, keys.buf, code_bits, codes.obj ? codes.buf : NULL,
                         hashes.obj ? hashes.buf : NULL, line, n, ans) < 0) {
            goto done;
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            if (ans[i] < 0) {
                continue;
            }
            PyObject *at = PyLong_FromSsize_t(i), *first = PyLong_FromLongLong(ans[i]);
            int failed = at == NULL || first == NULL || PyList_Append(positions, at) < 0 ||
                         PyList_Append(firsts, first) < 0;
            Py_XDECREF(at);
            Py_XDECREF(first);
            if (failed) {
                goto done;
            }
        }
    }
    result = PyTuple_Pack(2, positions, firsts);
done:
    PyMem_RawFree(ans);
    Py_XDECREF(positions);
    Py_XDECREF(firsts);
    if (keys.obj) PyBuffer_Release(&keys);
    if (codes.obj) PyBuffer_Release(&codes);
    if (hashes.obj) PyBuffer_Release(&hashes);
    if (lines.obj) PyBuffer_Release(&lines);
    return result;
}

static PyObject *
Record_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    int texts;
    Py_ssize_t min_filter = RECORD_MIN_FILTER, fixed_words = 0;
    static char *names[] = {"texts", "min_filter", "filter_words", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "p|$nn:Record", names, &texts, &min_filter,
                                     &fixed_words)) {
        return NULL;
    }
    if (min_filter < 0 || fixed_words < 0 || (uint64_t)fixed_words > UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "Record: min_filter >= 0, 0 <= filter_words < 2^32");
        return NULL;
    }
    Record *self = (Record *)type->tp_alloc(type, 0);
    if (self != NULL) {
        self->texts = texts;
        self->min_filter = min_filter;
        self->fixed_words = fixed_words;
    }
    return (PyObject *)self;
}

static void
Record_dealloc(Record *self)
{
    for (int r = 0; r < self->count; r++) {
        run_free(&self->runs[r]);
    }
    PyMem_RawFree(self->words);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
Record_size(Record *self, void *closure)
{
    return PyLong_FromSsize_t(self->size);
}

static PyObject *
Record_runs(Record *self, void *closure)
{
    return PyLong_FromLong(self->count);
}

static PyObject *
Record_nbytes(Record *self, void *closure)
{
    Py_ssize_t total = (Py_ssize_t)self->nwords * 8 * (self->words != NULL);
    for (int r = 0; r < self->count; r++) {
        total += run_bytes(&self->runs[r], self->texts);
    }
    return PyLong_FromSsize_t(total);
}

static PyGetSetDef Record_getset[] = {
    {"size", (getter)Record_size, NULL, "distinct pairs recorded", NULL},
    {"runs", (getter)Record_runs, NULL, "sorted runs held", NULL},
    {"nbytes", (getter)Record_nbytes, NULL, "bytes of the runs and the filter", NULL},
    {NULL},
};

static PyMethodDef Record_methods[] = {
    {"check", (PyCFunction)Record_check, METH_VARARGS, Record_check_doc},
    {NULL},
};

PyDoc_STRVAR(Record_doc,
"Record(texts, *, min_filter=2**20, filter_words=0)\n\n"
"The packed duplicate record of dispatcher.dedupe_runs.Runs, held in C: sorted runs of\n"
"keys, text hashes (texts true) and first lines behind a blocked Bloom filter of at\n"
"least min_filter pairs' capacity (Runs' MIN_FILTER). filter_words > 0: a filter of\n"
"that many words that never grows (the tests crowd it to make every pair a maybe).");

static PyTypeObject RecordType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "dispatcher._native.Record",
    .tp_basicsize = sizeof(Record),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = Record_doc,
    .tp_new = Record_new,
    .tp_dealloc = (destructor)Record_dealloc,
    .tp_methods = Record_methods,
    .tp_getset = Record_getset,
};

static PyMethodDef methods[] = {
    {"chunk_numbers", chunk_numbers, METH_VARARGS, chunk_numbers_doc},
    {"decode_lines", decode_lines, METH_VARARGS, decode_lines_doc},
    {"decode_block", decode_block, METH_VARARGS, decode_block_doc},
    {"batch_answer", batch_answer, METH_VARARGS, batch_answer_doc},
    {"batch_recipients", batch_recipients, METH_VARARGS, batch_recipients_doc},
    {"pack_batch", pack_batch, METH_VARARGS, pack_batch_doc},
    {"accepted_packed", accepted_packed, METH_VARARGS, accepted_packed_doc},
    {"plain_texts", plain_texts, METH_VARARGS, plain_texts_doc},
    {"plain_entries", plain_entries, METH_VARARGS, plain_entries_doc},
    {"segment_counts", segment_counts, METH_VARARGS, segment_counts_doc},
    {"accepted_lines", accepted_lines, METH_VARARGS, accepted_lines_doc},
    {"plain_keys", plain_keys, METH_VARARGS, plain_keys_doc},
    {"text_hashes", text_hashes, METH_VARARGS, text_hashes_doc},
    {"column_ints", column_ints, METH_VARARGS, column_ints_doc},
    {"column_keys", column_keys, METH_VARARGS, column_keys_doc},
    {"number_keys", number_keys, METH_VARARGS, number_keys_doc},
    {"merge_keys", merge_keys, METH_VARARGS, merge_keys_doc},
    {"take_at", take_at, METH_VARARGS, take_at_doc},
    {"empty", empty, METH_O, empty_doc},
    {"sorted_distinct", sorted_distinct, METH_VARARGS, sorted_distinct_doc},
    {"valid_keys", valid_keys, METH_VARARGS, valid_keys_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    "dispatcher._native",
    "The campaign checks' per-chunk loops in C; see dispatcher.native.",
    -1,
    methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

/* What dispatcher/native.py expects (its VERSION): raise it whenever a function is added
 * or changes what it takes or gives, so that a build left over from older sources is not
 * used by newer Python code. */
#define VERSION 13

PyMODINIT_FUNC
PyInit__native(void)
{
    if (PyType_Ready(&RecordType) < 0 || PyType_Ready(&KeySetType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "VERSION", VERSION) < 0 ||
        PyModule_AddObjectRef(m, "Record", (PyObject *)&RecordType) < 0 ||
        PyModule_AddObjectRef(m, "KeySet", (PyObject *)&KeySetType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
