/*
 * uprnlink.privacy._hmac: HMAC-SHA256 over many short messages in one call.
 *
 * Pseudonymisation hashes millions of short identifiers (a UPRN is at most 12 digits). Called
 * from Python, every message costs several interpreter-level calls into OpenSSL, and that
 * overhead, not SHA-256, is the stage's cost. This module moves the loop into C; the hashing
 * itself is OpenSSL's SHA-256 (libcrypto, the same library Python's hashlib uses, with its
 * SHA-NI/AVX code paths), so no cryptographic primitive is implemented here.
 *
 * HMAC (RFC 2104): H((K ^ opad) || H((K ^ ipad) || m)). The two keyed blocks are hashed once
 * per call ("midstates") and each message then costs one copy of each state and the final
 * blocks, exactly what OpenSSL's own HMAC does when a keyed context is reused.
 *
 * The only caller is uprnlink.privacy.keys (the one Python module holding key material). Key-derived
 * state lives on this function's stack and is wiped with OPENSSL_cleanse before it returns.
 * The GIL is released while hashing, so callers may run batches in parallel threads.
 */
#define PY_SSIZE_T_CLEAN
#define OPENSSL_SUPPRESS_DEPRECATED /* SHA256_Init/Update/Final: the midstate API we need */
#include <Python.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdint.h>
#include <string.h>

static const char HEX[] = "0123456789abcdef";

/*
 * tokens(key, data, offsets, count, take) -> bytes
 *
 * key:     the HMAC key (1..64 bytes; uprnlink passes a 32-byte sub-key).
 * data:    the messages laid end to end (an Arrow binary array's data buffer).
 * offsets: count + 1 little-endian int64 offsets into data (the array's offsets buffer);
 *          message i is data[offsets[i]:offsets[i + 1]].
 * take:    how many leading digest bytes to keep (1..32).
 *
 * Returns count * 2 * take lower-case hex characters: the tokens end to end.
 */
static PyObject *tokens(PyObject *self, PyObject *args) {
    Py_buffer key, data, offsets;
    Py_ssize_t count, take;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*y*nn", &key, &data, &offsets, &count, &take)) {
        return NULL;
    }
    PyObject *result = NULL;
    const int64_t *off = (const int64_t *)offsets.buf;
    if (key.len < 1 || key.len > SHA256_CBLOCK) {
        PyErr_SetString(PyExc_ValueError, "HMAC key must be 1 to 64 bytes");
        goto done;
    }
    if (take < 1 || take > SHA256_DIGEST_LENGTH) {
        PyErr_SetString(PyExc_ValueError, "take must be 1 to 32 bytes");
        goto done;
    }
    if (count < 0 || offsets.len != (Py_ssize_t)((count + 1) * (Py_ssize_t)sizeof(int64_t))) {
        PyErr_SetString(PyExc_ValueError, "offsets must hold count + 1 int64 values");
        goto done;
    }
    /* Validate every offset before hashing, so a bad buffer is an error, never a bad read. */
    for (Py_ssize_t i = 0; i <= count; i++) {
        if (off[i] < 0 || off[i] > data.len || (i > 0 && off[i] < off[i - 1])) {
            PyErr_SetString(PyExc_ValueError, "offsets must rise within the data buffer");
            goto done;
        }
    }
    result = PyBytes_FromStringAndSize(NULL, count * 2 * take);
    if (result == NULL) {
        goto done;
    }
    char *out = PyBytes_AsString(result);

    Py_BEGIN_ALLOW_THREADS
    unsigned char pad[SHA256_CBLOCK];
    unsigned char inner[SHA256_DIGEST_LENGTH];
    unsigned char digest[SHA256_DIGEST_LENGTH];
    SHA256_CTX ipad_state, opad_state, ctx;

    memset(pad, 0x36, sizeof pad);
    for (Py_ssize_t j = 0; j < key.len; j++) pad[j] ^= ((const unsigned char *)key.buf)[j];
    SHA256_Init(&ipad_state);
    SHA256_Update(&ipad_state, pad, sizeof pad);
    memset(pad, 0x5c, sizeof pad);
    for (Py_ssize_t j = 0; j < key.len; j++) pad[j] ^= ((const unsigned char *)key.buf)[j];
    SHA256_Init(&opad_state);
    SHA256_Update(&opad_state, pad, sizeof pad);

    const unsigned char *base = (const unsigned char *)data.buf;
    for (Py_ssize_t i = 0; i < count; i++) {
        ctx = ipad_state;
        SHA256_Update(&ctx, base + off[i], (size_t)(off[i + 1] - off[i]));
        SHA256_Final(inner, &ctx);
        ctx = opad_state;
        SHA256_Update(&ctx, inner, sizeof inner);
        SHA256_Final(digest, &ctx);
        char *o = out + i * 2 * take;
        for (Py_ssize_t j = 0; j < take; j++) {
            o[2 * j] = HEX[digest[j] >> 4];
            o[2 * j + 1] = HEX[digest[j] & 0x0f];
        }
    }
    OPENSSL_cleanse(pad, sizeof pad);
    OPENSSL_cleanse(inner, sizeof inner);
    OPENSSL_cleanse(digest, sizeof digest);
    OPENSSL_cleanse(&ipad_state, sizeof ipad_state);
    OPENSSL_cleanse(&opad_state, sizeof opad_state);
    OPENSSL_cleanse(&ctx, sizeof ctx);
    Py_END_ALLOW_THREADS

done:
    PyBuffer_Release(&key);
    PyBuffer_Release(&data);
    PyBuffer_Release(&offsets);
    return result;
}

static PyMethodDef methods[] = {
    {"tokens", tokens, METH_VARARGS,
     "tokens(key, data, offsets, count, take) -> bytes\n\n"
     "HMAC-SHA256 of count messages laid end to end in data (message i is\n"
     "data[offsets[i]:offsets[i+1]], offsets as count + 1 int64), each digest cut to its\n"
     "first take bytes and written as lower-case hex, end to end."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "uprnlink.privacy._hmac",
    "HMAC-SHA256 over many short messages in one call (OpenSSL SHA-256).", -1, methods,
};

PyMODINIT_FUNC PyInit__hmac(void) { return PyModule_Create(&module); }
